"""Building blocks shared by every Thresher service: contracts, config, errors, logging, backends."""
