"""What the operator commands share: bounded standalone Kafka and database access
(`access`) and the bounded topic reader (`reader`). Imports no worker process module."""
