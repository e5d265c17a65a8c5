"""A company's agents (profiles chosen per call), templating of what they say, and scheduled tasks."""
