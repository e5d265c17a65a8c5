"""bridge: Asterisk to realtime speech models."""
