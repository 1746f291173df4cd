"""Primary authentication: the protocol (:mod:`.base`), the local store's passwords (:mod:`.local`) and Windows
(REMOTE_USER from the server, :mod:`.remote_user`)."""
