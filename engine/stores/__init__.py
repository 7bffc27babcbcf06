"""Stores: the local content-addressed store, the local LMDB action cache, and (later) remote ones."""
