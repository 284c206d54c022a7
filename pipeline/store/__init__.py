"""What a run writes.

The one writer (``RunStorage``) and its layout, parts and their schemas, the lease, file
checks, manifests, closing finished songs, reading input audio.
"""
