"""A software prefetch for the compiled kernels (``_kernels``, ``_graph_kernels``).

Both searches and the graph build know which records they read next long before they read them,
and on a large index each such read is a miss to memory (~100 ns, more than the distance computed
from it). Asking for the line early lets several misses overlap; numba has no prefetch of its own,
so this emits LLVM's ``llvm.prefetch`` intrinsic.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, arr, idx):  # pragma: no cover - compiled
    """``llvm.prefetch`` of ``arr[idx]`` (a hint: no fault, no effect on results)."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        i8p = ir.PointerType(ir.IntType(8))
        fnty = ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32), ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        i32 = ir.IntType(32)
        read, keep_in_all_caches, data = ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)
        builder.call(fn, [builder.bitcast(ptr, i8p), read, keep_in_all_caches, data])
        return context.get_dummy_value()

    return sig, codegen
