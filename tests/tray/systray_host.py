"""A minimal X11 system tray (the freedesktop systray spec) for the tray's Xvfb tests.

It owns the `_NET_SYSTEM_TRAY_S<screen>` selection, announces itself with a MANAGER
message, and docks every icon that asks (`SYSTEM_TRAY_REQUEST_DOCK`) by reparenting it into
its own window at SIZE x SIZE pixels, as a desktop panel does. It prints
`ready <window id>` once it owns the selection; tests then find docked icons as that
window's children. Run: `python -m tests.tray.systray_host` with DISPLAY set.
"""

from __future__ import annotations

import sys

from Xlib import X, Xatom, display
from Xlib.protocol import event

SIZE = 48
REQUEST_DOCK = 0
XEMBED_EMBEDDED_NOTIFY = 0


def main() -> None:
    d = display.Display()
    screen = d.screen()
    host = screen.root.create_window(
        0, 0, SIZE * 4, SIZE, 0, screen.root_depth,
        background_pixel=screen.white_pixel, event_mask=X.SubstructureNotifyMask,
    )  # fmt: skip
    host.set_wm_name("test systray")
    host.map()
    selection = d.intern_atom(f"_NET_SYSTEM_TRAY_S{d.get_default_screen()}")
    opcode = d.intern_atom("_NET_SYSTEM_TRAY_OPCODE")
    xembed = d.intern_atom("_XEMBED")
    host.change_property(d.intern_atom("_NET_SYSTEM_TRAY_ORIENTATION"), Xatom.CARDINAL, 32, [0])
    host.set_selection_owner(selection, X.CurrentTime)
    if d.get_selection_owner(selection) != host:
        sys.exit("could not own the system tray selection")
    announce = event.ClientMessage(
        window=screen.root, client_type=d.intern_atom("MANAGER"),
        data=(32, [X.CurrentTime, selection, host.id, 0, 0]),
    )  # fmt: skip
    screen.root.send_event(announce, event_mask=X.StructureNotifyMask)
    d.flush()
    print(f"ready {host.id}", flush=True)
    docked: list[int] = []
    while True:
        ev = d.next_event()
        if ev.type != X.ClientMessage or ev.client_type != opcode:
            continue
        _, op, icon_id, *_ = ev.data[1]
        if op != REQUEST_DOCK or icon_id in docked:
            continue
        icon = d.create_resource_object("window", icon_id)
        icon.reparent(host, SIZE * len(docked), 0)
        icon.configure(width=SIZE, height=SIZE)
        icon.map()
        notify = event.ClientMessage(
            window=icon, client_type=xembed,
            data=(32, [X.CurrentTime, XEMBED_EMBEDDED_NOTIFY, 0, host.id, 0]),
        )  # fmt: skip
        icon.send_event(notify)
        d.flush()
        docked.append(icon_id)


if __name__ == "__main__":
    main()
