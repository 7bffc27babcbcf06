"""Garbage collection of the local cache (`mbuild gc`): the lock builds and gc share, the record of
when each result was last used, and the collection itself."""
