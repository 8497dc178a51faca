"""What the explorer's routes share, as a structural type.

``glocon.explore.app.Explorer`` builds the routers of ``api`` and ``pages``, so those modules
cannot name it without an import cycle; ``ExploreContext`` is the part of it they read, and
``Explorer`` satisfies it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only
    from glocon.explore.banks import Banks
    from glocon.explore.config import ExploreConfig
    from glocon.explore.folders import Folders
    from glocon.explore.regions import Evals
    from glocon.explore.shardsets import ShardSets


class ExploreContext(Protocol):
    """The explorer's config, its folders and the opened shard sets, banks and evaluations."""

    @property
    def cfg(self) -> ExploreConfig: ...

    @property
    def folders(self) -> Folders: ...

    @property
    def shardsets(self) -> ShardSets: ...

    @property
    def banks(self) -> Banks: ...

    @property
    def evals(self) -> Evals: ...

    def class_names(self) -> dict[int, str]: ...
