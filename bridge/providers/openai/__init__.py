"""OpenAI Realtime GA (and the services that speak it: Azure OpenAI, xAI)."""
