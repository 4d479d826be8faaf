"""Consumer groups: the classic group protocol coordinator and durable committed offsets.

The broker registers one handler per group API, each a coroutine of :class:`GroupCoordinator`;
the module map is in docs/groups.md.
"""

from sluice.broker.groups.config import GroupConfig
from sluice.broker.groups.coordinator import GROUP_APIS, GroupCoordinator

__all__ = ["GROUP_APIS", "GroupConfig", "GroupCoordinator"]
