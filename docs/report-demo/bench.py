# Synthetic latency objective for the README screenshot (not a real measurement).
import json, math, os, random
p = json.load(open(os.environ["OSTUNE_PARAMS_FILE"]))
p99 = (0.20 + 0.08 * (p["transparent_hugepage.enabled"] == "always") + 0.03 * (p["mitigations"] == "auto")
       + 0.06 * math.exp(-p["net.core.busy_poll"] / 40) + 0.0004 * abs(p["vm.swappiness"] - 10))
print(json.dumps({"p99_ms": p99 * random.lognormvariate(0, 0.06), "ops_per_s": 9000 / p99}))
