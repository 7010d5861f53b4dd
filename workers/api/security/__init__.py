"""Who is asking and what they may do: request signatures and tokens (`signatures`), delivery
ids claimed once against replays and retries (`deliveries`), the authorization rules (`authz`)
and the record of every decision (`audit`)."""
