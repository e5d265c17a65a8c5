"""Company integrations: live event hub, post-call reports (and the webhook outbox, WhatsApp)."""
