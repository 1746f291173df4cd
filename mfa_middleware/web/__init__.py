"""HTTP plumbing shared by the adapters and the pages (cookies), below both: neither imports the other."""
