"""`refundctl`: the composition root (CLI, settings, dev stack) over adapters and worker."""
