"""placeholder"""

from flowkit.persistence._base import FlowPersistence


class FileFlowPersistence(FlowPersistence):
    def save_state(self, flow_uuid, method_name, state_data): ...
    def load_state(self, flow_uuid): ...
