"""Typed, versioned RPC over Redis lists. The wire format is in docs/rpc.md."""

from turnout.common.rpc.client import RpcClient
from turnout.common.rpc.contract import EXPLAIN_V1, ROUTE_V1, RpcMethod, gpu_order_method
from turnout.common.rpc.server import RpcContext, RpcServer

__all__ = ["EXPLAIN_V1", "ROUTE_V1", "RpcClient", "RpcContext", "RpcMethod", "RpcServer", "gpu_order_method"]
