package janitor

// SetBeforeBatch installs a hook that runs before each fenced step.
func (j *Janitor) SetBeforeBatch(f func()) { j.beforeBatch = f }
