#!/usr/bin/env python3
"""CNI CHECK and DEL of a whole plugin chain, as libcni runs them (stdlib only).

`ctr run --cni` (containerd 1.6) calls ADD for a conflist, and DEL only when a
`--rm` container in the foreground ends; it never calls CHECK, and never DELs a
detached container. containerd.sh uses this tool for those two operations,
with the same inputs libcni would give the plugins: the conflist, and the
cached result libcni wrote at ADD (results/NET-CONTAINERID-IFNAME in its cache
directory, containing containerId, ifName, cniArgs and the final result).

  cnichain.py check CONFLIST CACHE NETNS PLUGIN_DIR
      CHECK every plugin in list order; each gets the list's name and
      cniVersion and the cached result as prevResult (libcni's
      CheckNetworkList). Exit 1 naming the first plugin that fails.
  cnichain.py del CONFLIST CACHE PLUGIN_DIR
      DEL every plugin in reverse order with CNI_NETNS empty (as ctr does),
      then remove the cache entry (libcni's DelNetworkList).
"""

import json
import os
import subprocess
import sys

from toolcli import command, run


def invoke(cmd, plugin, conflist, cache, netns, plugin_dir):
    conf = dict(plugin)
    conf["name"] = conflist["name"]
    conf["cniVersion"] = conflist["cniVersion"]
    if cache.get("result") is not None:
        conf["prevResult"] = cache["result"]
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": cmd,
        "CNI_CONTAINERID": cache["containerId"],
        "CNI_NETNS": netns,
        "CNI_IFNAME": cache["ifName"],
        "CNI_ARGS": ";".join(f"{k}={v}" for k, v in cache.get("cniArgs") or []),
        "CNI_PATH": plugin_dir,
    }
    p = subprocess.run([os.path.join(plugin_dir, plugin["type"])], input=json.dumps(conf).encode(),
                       env=env, capture_output=True, timeout=60, check=False)
    out = p.stdout.decode(errors="replace").strip()
    err = p.stderr.decode(errors="replace").strip()
    print(f"{cmd} {plugin['type']}: exit {p.returncode}{' out: ' + out if out else ''}{' err: ' + err if err else ''}")
    return p.returncode


def load(conflist_path, cache_path):
    with open(conflist_path, encoding="utf-8") as f:
        conflist = json.load(f)
    with open(cache_path, encoding="utf-8") as f:
        cache = json.load(f)
    return conflist, cache


@command
def check(conflist_path, cache_path, netns, plugin_dir):
    conflist, cache = load(conflist_path, cache_path)
    for plugin in conflist["plugins"]:
        if invoke("CHECK", plugin, conflist, cache, netns, plugin_dir) != 0:
            sys.exit(f"CHECK failed in {plugin['type']}")
    print("CHECK ok: " + " ".join(p["type"] for p in conflist["plugins"]))


@command
def delete(conflist_path, cache_path, plugin_dir):
    conflist, cache = load(conflist_path, cache_path)
    failed = [p["type"] for p in reversed(conflist["plugins"])
              if invoke("DEL", p, conflist, cache, "", plugin_dir) != 0]
    if failed:
        sys.exit(f"DEL failed in {' '.join(failed)}")
    os.remove(cache_path)


COMMANDS_ALIAS = {"del": "delete"}

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS_ALIAS:
        sys.argv[1] = COMMANDS_ALIAS[sys.argv[1]]
    run()
