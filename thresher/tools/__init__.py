"""The operator's tools: the `thresher` CLI, the gateway's HTTP client, the supervisor and the launcher."""
