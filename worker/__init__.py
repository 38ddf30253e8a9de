"""The refund worker: a Kafka consumer-group member applying cancels to the ledger."""
