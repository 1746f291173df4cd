"""I/O orchestration: sign-in, enrollment, accounts, revocation, audit. The core never calls these."""
