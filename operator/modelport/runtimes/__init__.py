"""Self-hosted models: the inference runtimes and the model catalog."""
