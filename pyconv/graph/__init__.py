"""The graph layer: load -> validate -> order -> optimise -> plan memory -> execute."""
from pyconv.graph._load import Graph, ValueInfo, load
from pyconv.graph._passes import optimize
from pyconv.graph._executor import MemoryPlan, Program

__all__ = ["Graph", "ValueInfo", "load", "optimize", "MemoryPlan", "Program"]
