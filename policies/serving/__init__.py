"""Serving: the decision runtime (numpy + onnxruntime), its decision log, the HTTP service, load tests.

Nothing here imports torch: an artifact is served with onnxruntime alone.
"""

from pushrl.policies.serving.decision_log import DecisionLog, join_rewards, read_decision_log
from pushrl.policies.serving.runtime import Decision, PolicyRuntime, RequestError

__all__ = ["Decision", "DecisionLog", "PolicyRuntime", "RequestError", "join_rewards", "read_decision_log"]
