"""In-place outputs: an action writes its output straight under a configured prefix (gs://, s3://, a
local directory), and mbuild records a manifest built from the store's own listing, never copying
a byte.

  manifest.py  the manifest: (relative path, size, checksum the store keeps) per object, and its digest
  listing.py   one batched listing of a prefix as manifest entries, per backend
  store.py     InPlaceStore: where a key's output goes, preparing it, checking a hit, provenance
"""
