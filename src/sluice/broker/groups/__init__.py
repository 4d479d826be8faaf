"""Consumer groups: the classic group protocol coordinator and durable committed offsets.

The broker routes every API in :data:`GROUP_APIS` to :meth:`GroupCoordinator.handle`; the
module map is in docs/groups.md.
"""

from sluice.broker.groups.config import GroupConfig
from sluice.broker.groups.coordinator import GROUP_APIS, GroupCoordinator

__all__ = ["GROUP_APIS", "GroupConfig", "GroupCoordinator"]
