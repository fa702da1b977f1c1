package revision

// SetBeforeCheck installs a hook that runs in Evict and Unevict after the
// new file is written, before the check that the old one is still in place.
func (s *File) SetBeforeCheck(f func()) { s.beforeCheck = f }
