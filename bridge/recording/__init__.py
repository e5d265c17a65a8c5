"""Call recordings: stereo WAVs (caller left, bot right) written off the event loop, and retention."""
