"""Run SCALE-Sim v3 on GEMMs read as JSON from stdin; write one JSON result per GEMM to stdout.

This script runs inside the SCALE-Sim virtual environment (scalesim 3.0.0
with numpy < 2), never inside hwsim's, so it imports nothing from hwsim.
`hwsim.hardware.scalesim_oracle` starts it as a subprocess.

Input: a JSON list of objects with keys rows, cols, dataflow, ifmap_kb,
filter_kb, ofmap_kb, bandwidth, m, n, k. SCALE-Sim 3.0.0 in USER bandwidth
mode reads the ofmap DRAM bandwidth from [architecture_presets] Bandwidth and
the ifmap and filter DRAM bandwidths from [layout] IfmapSRAMBankBandwidth and
FilterSRAMBankBandwidth, so all three get the requested bandwidth.
"""

import contextlib
import io
import json
import os
import sys
import tempfile
import time

from scalesim.scale_sim import scalesim

CONFIG_TEMPLATE = """[general]
run_name = hwsim

[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : {ifmap_kb}
FilterSramSzkB : {filter_kb}
OfmapSramSzkB : {ofmap_kb}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Bandwidth : {bandwidth}
Dataflow : {dataflow}
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
FilterCustomLayout : False
IfmapSRAMBankBandwidth : {bandwidth}
IfmapSRAMBankNum : 1
IfmapSRAMBankPort : 2
FilterSRAMBankBandwidth : {bandwidth}
FilterSRAMBankNum : 1
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : USER
UseRamulatorTrace : False
"""


def run_case(case, workdir):
    config_path = os.path.join(workdir, "scalesim.cfg")
    topology_path = os.path.join(workdir, "gemm.csv")
    layout_path = os.path.join(workdir, "layout.csv")
    with open(config_path, "w") as handle:
        handle.write(CONFIG_TEMPLATE.format(**case))
    with open(topology_path, "w") as handle:
        handle.write("Layer, M, N, K,\ngemm, %d, %d, %d,\n" % (case["m"], case["n"], case["k"]))
    with open(layout_path, "w") as handle:
        handle.write("Layer name,\n")

    start = time.perf_counter()
    # SCALE-Sim prints progress to stdout, which carries this script's JSON, so capture it.
    with contextlib.redirect_stdout(io.StringIO()):
        simulation = scalesim(
            save_disk_space=True, verbose=False, config=config_path, topology=topology_path,
            layout=layout_path, input_type_gemm=True,
        )
        simulation.run_scale(top_path=os.path.join(workdir, "out"))
    seconds = time.perf_counter() - start

    layer = simulation.runner.single_layer_sim_object_list[0]
    compute = layer.get_compute_report_items()
    detail = layer.get_detail_report_items()
    return {
        "total_cycles_with_prefetch": int(compute[0]),
        "total_cycles": int(compute[1]),
        "stall_cycles": int(compute[2]),
        "overall_util_percent": float(compute[3]),
        "mapping_efficiency_percent": float(compute[4]),
        "compute_util_percent": float(compute[5]),
        "ifmap_sram_reads": int(detail[2]),
        "filter_sram_reads": int(detail[5]),
        "ofmap_sram_writes": int(detail[8]),
        "ifmap_dram_reads": int(detail[11]),
        "filter_dram_reads": int(detail[14]),
        "ofmap_dram_writes": int(detail[17]),
        "seconds": seconds,
    }


def main():
    cases = json.load(sys.stdin)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for case in cases:
            results.append(run_case(case, workdir))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
