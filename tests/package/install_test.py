#!/usr/bin/env python3
"""The Debian package (issue 12) installed the way a user installs it: `apt install ./peerlight_*.deb`
in a fresh Debian 12 root made by debootstrap (a chroot: the machine's own system is not
touched).

- The package installs with its dependencies from Debian's archive; `peerlight version` runs.
- It creates the `peerlight` group, and the unit names /usr/bin/peerlight with
  --control-group peerlight.
- The daemon, started as the unit starts it (its ExecStart, user and group; no systemd runs as
  PID 1 in a chroot), listens, and gives its control socket to the group (mode 0660); a member
  of the group renders through it, bitwise the image of a render in process, and its
  `peerlight session` (what the Blender add-on runs) is held by it, its save bitwise the same.
- Debian's Blender finds the add-on where the package put it, enables it, and offers the
  peerlight engine.
- `apt purge` removes the binary, the unit and its enablement, the add-on and the daemon's
  state (the group stays, as Debian keeps system groups).

Needs root, debootstrap and Debian's archive (the debootstrap tarball is kept in the build's
test cache for the next run); exits 77 (skipped) without them. Every process it starts is
killed and the root is removed.
    tests/package/install_test.py BUILD_DIR SOURCE_DIR
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77
failures = []


def check(ok, message):
    print(("ok   " if ok else "FAIL ") + message, flush=True)
    if not ok:
        failures.append(message)


def run(command, timeout=600, **kw):
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kw)


def main():
    build, source = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        print("[  SKIPPED ] needs root and debootstrap")
        return SKIP
    # The package, as `./run package` makes it.
    made = run(["cpack", "-G", "DEB", "-B", os.path.join(build, "package")], cwd=build)
    debs = sorted(f for f in os.listdir(os.path.join(build, "package")) if f.endswith(".deb"))
    if made.returncode != 0 or not debs:
        print(made.stdout, made.stderr)
        check(False, "cpack builds the package")
        return 1
    deb = os.path.join(build, "package", debs[-1])
    cache = os.path.join(build, "test-cache", "debootstrap-bookworm.tgz")
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    if not os.path.exists(cache):
        made = run(["debootstrap", "--variant=minbase", "--make-tarball=" + cache, "bookworm",
                    tempfile.mkdtemp(prefix="pl-debootstrap-"), "http://deb.debian.org/debian"],
                   timeout=900)
        if made.returncode != 0:
            print(made.stdout[-2000:], made.stderr[-2000:])
            print("[  SKIPPED ] debootstrap could not fetch Debian 12 (no archive reachable?)")
            return SKIP
    root = tempfile.mkdtemp(prefix="pl-debian12-")
    os.chmod(root, 0o755)  # the chroot's "/": every user of it needs to get in
    mounted = []
    daemon = None
    try:
        made = run(["debootstrap", "--variant=minbase", "--unpack-tarball=" + cache, "bookworm",
                    root, "http://deb.debian.org/debian"], timeout=900)
        if made.returncode != 0:
            print(made.stdout[-2000:], made.stderr[-2000:])
            check(False, "debootstrap makes a Debian 12 root")
            return 1
        for fs, where in (("proc", "proc"), ("devtmpfs", "dev")):
            target = os.path.join(root, where)
            if run(["mount", "-t", fs, fs, target]).returncode == 0:
                mounted.append(target)
        shutil.copy("/etc/resolv.conf", os.path.join(root, "etc", "resolv.conf"))
        shutil.copy(deb, os.path.join(root, "tmp", "peerlight.deb"))

        def chroot(*command, user=None, timeout=600):
            prefix = ["chroot"]
            if user:
                prefix.append("--userspec=" + user)
            return run(prefix + [root] + list(command), timeout=timeout,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                            "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"})

        update = chroot("apt-get", "update", "-q")
        installed = chroot("apt-get", "install", "-y", "-q", "--no-install-recommends",
                           "/tmp/peerlight.deb")
        if update.returncode != 0 or installed.returncode != 0:
            print(update.stdout[-2000:], installed.stdout[-3000:], installed.stderr[-3000:])
        check(installed.returncode == 0, "apt install ./peerlight_*.deb in a fresh Debian 12 root")
        version = chroot("peerlight", "version")
        check(version.returncode == 0 and "peerlight" in version.stdout,
              "peerlight version runs there (%s)" % version.stdout.strip()[:60])
        group = chroot("getent", "group", "peerlight")
        check(group.returncode == 0, "the package created the peerlight group")
        wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants",
                             "peerlight-node.service")
        check(os.path.islink(wants), "and enabled the unit (multi-user.target wants it)")
        unit_path = os.path.join(root, "usr/lib/systemd/system/peerlight-node.service")
        unit = open(unit_path).read() if os.path.exists(unit_path) else ""
        exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M)
        check(exec_start is not None and exec_start.group(1).startswith("/usr/bin/peerlight ")
              and "--control-group peerlight" in exec_start.group(1),
              "the unit starts /usr/bin/peerlight with --control-group peerlight")

        # The daemon as the unit starts it: its ExecStart (on an ephemeral loopback port, no
        # mDNS: there is no avahi-daemon in the chroot), its Environment, a user of its own with
        # the peerlight group (the unit's DynamicUser and SupplementaryGroups), /run/peerlight.
        chroot("useradd", "--system", "--no-create-home", "pl-daemon")
        chroot("useradd", "--create-home", "--groups", "peerlight", "artist")
        chroot("useradd", "--create-home", "outsider")
        for folder, mode in (("run/peerlight", 0o755), ("var/lib/peerlight", 0o700)):
            os.makedirs(os.path.join(root, folder), exist_ok=True)
            chroot("chown", "pl-daemon", "/" + folder)
            os.chmod(os.path.join(root, folder), mode)
        argv = shlex.split(exec_start.group(1)) if exec_start else []
        argv = [a if a != "0.0.0.0:7421" else "127.0.0.1:0" for a in argv] + \
            ["--no-mdns", "--http", "off", "--threads", "1"]
        env = " ".join(re.findall(r"^Environment=(\S+)$", unit, re.M))
        daemon = subprocess.Popen(
            ["chroot", "--userspec=pl-daemon:pl-daemon", "--groups=peerlight", root, "/usr/bin/env",
             "-i", "PATH=/usr/bin:/bin"] + env.split() + argv,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        listening = None
        deadline = time.monotonic() + 30
        while listening is None and time.monotonic() < deadline:
            line = daemon.stdout.readline()
            if not line:
                break
            if line.startswith("listening on "):
                listening = line.split()[-1]
        check(listening is not None, "the daemon starts as the unit starts it (%s)" % listening)
        if listening is None:
            daemon.kill()
            print(daemon.stdout.read()[-2000:])
        sock = os.path.join(root, "run/peerlight/node.sock")
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.1)
        st = os.stat(sock) if os.path.exists(sock) else None
        gid = group.stdout.split(":")[2] if group.returncode == 0 else "?"
        check(st is not None and (st.st_mode & 0o777) == 0o660 and str(st.st_gid) == gid,
              "its control socket is 0660 and the peerlight group's")
        shutil.copy(os.path.join(source, "scenes", "cornell_box.gltf"),
                    os.path.join(root, "tmp", "cornell_box.gltf"))
        os.chmod(os.path.join(root, "tmp", "cornell_box.gltf"), 0o644)
        common = ["peerlight", "render", "/tmp/cornell_box.gltf", "--size", "32x32", "--spp", "2",
                  "--no-mdns", "--json"]
        through = chroot(*common, "-o", "/tmp/daemon.exr", user="artist")
        check(through.returncode == 0 and '"node_daemon"' in through.stdout and
              "/run/peerlight/node.sock" in through.stdout,
              "a member of the group renders through the daemon")
        if through.returncode != 0:
            print(through.stdout[-2000:], through.stderr[-2000:])
        local = chroot(*common, "-o", "/tmp/local.exr", "--no-daemon", "--local-only",
                       user="artist")
        a, b = (os.path.join(root, "tmp", n) for n in ("daemon.exr", "local.exr"))
        check(local.returncode == 0 and os.path.exists(a) and os.path.exists(b) and
              open(a, "rb").read() == open(b, "rb").read(),
              "and the image is bitwise the one rendered in process")
        # A session (what the Blender add-on runs) of a group member: held by the daemon; its
        # save is bitwise the same image. stdin stays open until the file is there.
        save = '{"op":"save","path":"/tmp/session.exr","id":1}'
        session = chroot("sh", "-c",
                         "{ echo '%s'; i=0; while [ ! -f /tmp/session.exr ] && [ $i -lt 300 ]; "
                         "do sleep 0.1; i=$((i+1)); done; } | peerlight session "
                         "/tmp/cornell_box.gltf --size 32x32 --spp 2 --no-mdns" % save,
                         user="artist")
        held = os.path.join(root, "tmp", "session.exr")
        check(session.returncode == 0 and '"renders_in":"the node daemon at '
              '/run/peerlight/node.sock"' in session.stdout and '"saved"' in session.stdout and
              os.path.exists(held) and os.path.exists(b) and
              open(held, "rb").read() == open(b, "rb").read(),
              "a member's `peerlight session` is held by the daemon, its save bitwise the same")
        if session.returncode != 0 or '"saved"' not in session.stdout:
            print(session.stdout[-2000:], session.stderr[-2000:])
        outside = chroot(*common, "-o", "/tmp/outside.exr", user="outsider")
        check(outside.returncode == 0 and "/run/peerlight/node.sock" not in outside.stdout,
              "a user outside the group renders in process instead")
        daemon.terminate()
        daemon.wait(timeout=15)

        # Debian's Blender (the host's) finds the add-on where the package put it.
        scripts = os.path.join(root, "usr/share/blender/scripts")
        code = ("import addon_utils, bpy\n"
                "names = [m.__name__ for m in addon_utils.modules()]\n"
                "addon_utils.enable('peerlight_blender', default_set=True)\n"
                "bpy.context.scene.render.engine = 'PEERLIGHT'\n"
                "print('ADDON', 'peerlight_blender' in names, bpy.context.scene.render.engine)\n")
        if shutil.which("blender"):
            found = run(["blender", "-b", "--factory-startup", "--python-exit-code", "1",
                         "--python-expr", code],
                        env={"PATH": "/usr/bin:/bin", "HOME": root + "/root",
                             "BLENDER_USER_SCRIPTS": scripts})
            check(found.returncode == 0 and "ADDON True PEERLIGHT" in found.stdout,
                  "Blender finds the add-on in the package's folder and offers its engine")
            if found.returncode != 0:
                print(found.stdout[-2000:], found.stderr[-2000:])
        else:
            print("(no blender on this machine: the add-on check is skipped)")

        purged = chroot("apt-get", "purge", "-y", "-q", "peerlight")
        if purged.returncode != 0:
            print(purged.stdout[-2000:], purged.stderr[-2000:])
        left = [p for p in ("usr/bin/peerlight", "usr/share/blender/scripts/addons/peerlight_blender",
                            "usr/lib/systemd/system/peerlight-node.service", "var/lib/peerlight",
                            "etc/systemd/system/multi-user.target.wants/peerlight-node.service")
                if os.path.lexists(os.path.join(root, p))]
        check(purged.returncode == 0 and not left,
              "apt purge removes the binary, the unit, its enablement, the add-on and the "
              "daemon's state (left: %s)" % left)
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        for target in reversed(mounted):
            run(["umount", "-l", target])
        if not any(os.path.ismount(m) for m in mounted):
            shutil.rmtree(root, ignore_errors=True)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
