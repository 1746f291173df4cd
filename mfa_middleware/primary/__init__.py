"""Primary authentication: forms (local store) and Windows (REMOTE_USER from the server)."""
