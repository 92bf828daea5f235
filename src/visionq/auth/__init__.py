"""Who is calling: API keys, JWT access and refresh tokens, and the principal they stand for."""
