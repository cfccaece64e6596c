#!/usr/bin/python3
"""Serve numbered JPEG frames (FOLDER/0.jpg, 1.jpg, ...) as an H.264 RTSP stream on
loopback, looping, with GStreamer's RTSP server: a stand-in IP camera for tests and demos.

    /usr/bin/python3 scripts/rtsp-server.py FOLDER PORT [--fps 5] [--user U --password P]

The stream is rtsp://127.0.0.1:PORT/cam (rtsp://U:P@127.0.0.1:PORT/cam with basic auth).
Prints "ready" on stdout once it listens. Debian packages: python3-gi,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-base, -good and -ugly (scripts/setup.sh).
Run it with Debian's /usr/bin/python3: the GObject bindings live there.
"""

import argparse
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("port", type=int)
    ap.add_argument("--fps", type=int, default=5)
    ap.add_argument("--user")
    ap.add_argument("--password")
    args = ap.parse_args()
    frames = len([f for f in os.listdir(args.folder) if f.endswith(".jpg")])
    if frames == 0:
        sys.exit(f"no N.jpg frames in {args.folder}")

    Gst.init(None)
    # Every client gets the same stream; a keyframe every second lets a reconnecting
    # client start decoding at once.
    launch = (
        f"( multifilesrc location={args.folder}/%d.jpg index=0 stop-index={frames - 1} "
        f"loop=true caps=image/jpeg,framerate={args.fps}/1 ! jpegdec ! videoconvert "
        f"! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
        f"key-int-max={args.fps} ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", args.user)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_role_from_structure(
            Gst.Structure.new_from_string(
                f"{args.user}, media.factory.access=(boolean)true, "
                "media.factory.construct=(boolean)true"
            )
        )
        factory.set_permissions(perms)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
