"""Generated from proto/thresher/v1 by `make proto`; never edit the *_pb2* files."""
