# Persistence: the one atomic-write path and the one checksummed record format,
# and the files built on them. Imports base only.
