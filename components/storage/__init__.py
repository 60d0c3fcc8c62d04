"""Object storage and data versioning helpers (atomic files, DVC, S3)."""
