"""Consumer groups: the classic group protocol coordinator and durable committed offsets.

The broker routes every API in :data:`GROUP_APIS` to :meth:`GroupCoordinator.handle`.
"""

from sluice.broker.groups.coordinator import GROUP_APIS, GroupConfig, GroupCoordinator

__all__ = ["GROUP_APIS", "GroupConfig", "GroupCoordinator"]
