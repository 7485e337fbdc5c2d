"""dev: edge-namm eval with memory.VICTIMS patched (argv[1]); the rest are eval's arguments"""
import sys
import edge_namm.engine.memory as memory
memory.VICTIMS = sys.argv[1]
from edge_namm.cli.main import main
sys.argv = ["edge-namm", "eval", *sys.argv[2:]]
main()
