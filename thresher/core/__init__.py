"""Building blocks shared by every Thresher service: config, errors, logging, gRPC and trust, backends."""
