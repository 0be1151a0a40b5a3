"""Object stores, chosen by a path's scheme: `s3://` is S3Store (boto3 is imported only then), others LocalStore."""

from __future__ import annotations

import os

from thresher.core.config import InputSettings
from thresher.core.store.base import S3_SCHEME, ObjectInfo, ObjectStore

__all__ = ["ObjectInfo", "ObjectStore", "ObjectStores"]


class ObjectStores:
    """The stores one configuration reads inputs from, each opened on first use."""

    def __init__(self, settings: InputSettings) -> None:
        self.settings = settings
        self._local: ObjectStore | None = None
        self._s3: ObjectStore | None = None

    def for_path(self, path: str) -> ObjectStore:
        if path.startswith(S3_SCHEME):
            if self._s3 is None:
                from thresher.core.store.s3 import S3Store

                self._s3 = S3Store(self.settings)
            return self._s3
        if self._local is None:
            from thresher.core.store.local import LocalStore

            roots = [root for root in self.settings.local_roots.split(os.pathsep) if root]
            self._local = LocalStore(roots)
        return self._local

    async def close(self) -> None:
        for store in (self._local, self._s3):
            if store is not None:
                await store.close()
        self._local = self._s3 = None
