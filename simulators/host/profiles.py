"""Hardware profiles a simulated node can be provisioned with, and the tool
emulators every simulated host gets.

- bare: Ubuntu 22.04 (initramfs-tools), no Agilio card (an Intel X710 only)
- agilio-cx: Ubuntu 22.04, one AMDA0097 (19ee:4000) at 0000:04:00.0 on nic
  firmware (legacy), no pci- link, 0 VFs
- agilio-cx-split-usr: agilio-cx on a node whose /lib is not a link to usr/lib
  (upgraded from 18.04)
- agilio-cx-rocky9: agilio-cx on Rocky 9 (dracut)
- agilio-cx-suse: SLES 15 SP5 (dracut, /boot/initrd-<kver>, no usrmerge) with
  xz-compressed firmware (kernel-firmware-nfp)
- agilio-cx-corigine: a Corigine-branded card (1da8:4000) on Ubuntu 22.04
- agilio-cx-nfp3800: an NFP3800 card (19ee:3800, VFs 3803, AMDA2001-1003, 2x25)
  on Rocky 9; no nic file in linux-firmware for it: it boots the flash firmware
- agilio-cx-dual: Rocky 9, two AMDA0097 (0000:04:00.0, 0000:81:00.0)
- agilio-cx-amda0081: CentOS Stream 8, kernel 4.18 (dracut), an AMDA0081;
  no flower/nic_AMDA0081.nffw installed
- agilio-cx-converged: as the pipeline leaves agilio-cx: flower via the link,
  initramfs hook and image, 4 VFs
- agilio-cx-flaky-modprobe: agilio-cx with faults {"fail": {"modprobe": 1}}
- agilio-cx-no-flower-firmware: agilio-cx without the flower firmware package
- agilio-cx-no-devlink: agilio-cx with faults {"absent": ["devlink"]} (old iproute2)
- agilio-cx-nonroot: agilio-cx where `id -u` is 1000
- centos7-old-kernel: CentOS 7, kernel 3.10, one AMDA0097 (fails preflight)

Usrmerged distributions (Ubuntu 19.04+ fresh installs, Debian 12, RHEL/CentOS
7+, Rocky, Fedora) have `/lib`, `/bin`, `/sbin` and `/lib64` as links into
`usr/`; SLES 15 does not.
Every node runs Kube-OVN with HW_OFFLOAD (OVS other_config:hw-offload=true).
Faults are listed in `simulators/host/faults.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from simulators.host import nfp, nfp_tools, os_tools, ovs
from simulators.host.faults import inject
from simulators.host.firmware import FW_DIR, install_flower_firmware, install_nic_firmware
from simulators.host.host import SimulatedHost
from simulators.host.nfp import CardSpec, add_netdev, add_pci_function, provision_card


@dataclass(frozen=True)
class Profile:
    provision: Callable[[SimulatedHost], None]
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""


def nfd_label(vendor: str) -> dict[str, str]:
    """Node Feature Discovery's PCI label of a vendor (deviceLabelFields: [vendor])."""
    return {f"feature.node.kubernetes.io/pci-{vendor}.present": "true"}


NFD_LABEL = nfd_label("19ee")


@dataclass(frozen=True)
class Distro:
    os_release: str
    kernel: str
    initramfs: str
    module_suffix: str = ".ko"
    usrmerge: bool = True
    firmware_suffix: str = ""
    """What the distribution's firmware packages append to each file (SUSE: .xz)."""
    dracut_image: str = "/boot/initramfs-{kver}.img"


UBUNTU_2204 = Distro(
    'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\nVERSION="22.04.4 LTS (Jammy Jellyfish)"\n'
    "ID=ubuntu\nID_LIKE=debian\n", "5.15.0-91-generic", "initramfs-tools")
UBUNTU_2204_SPLIT_USR = Distro(UBUNTU_2204.os_release, UBUNTU_2204.kernel, "initramfs-tools", usrmerge=False)
ROCKY_9 = Distro(
    'NAME="Rocky Linux"\nVERSION="9.3 (Blue Onyx)"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n'
    'PRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"\n', "5.14.0-362.8.1.el9_3.x86_64", "dracut", ".ko.xz")
# os-release of registry.suse.com/suse/sle15:15.5; the kernel and dracut's image name as a
# SLES 15 SP5 node reports them ("Creating initramfs image file '/boot/initrd-5.14.21-150500.55.65-default'")
SLES_15 = Distro(
    'NAME="SLES"\nVERSION="15-SP5"\nVERSION_ID="15.5"\nPRETTY_NAME="SUSE Linux Enterprise Server 15 SP5"\n'
    'ID="sles"\nID_LIKE="suse"\n', "5.14.21-150500.55.65-default", "dracut", usrmerge=False,
    firmware_suffix=".xz", dracut_image="/boot/initrd-{kver}")
CENTOS_STREAM_8 = Distro(
    'NAME="CentOS Stream"\nVERSION="8"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="8"\n'
    'PRETTY_NAME="CentOS Stream 8"\n', "4.18.0-552.el8.x86_64", "dracut", ".ko.xz")
CENTOS_7 = Distro(
    'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\n'
    'PRETTY_NAME="CentOS Linux 7 (Core)"\n', "3.10.0-1160.el7.x86_64", "dracut", ".ko.xz")


def _os(host: SimulatedHost, distro: Distro, *, uid: int = 0) -> None:
    if distro.usrmerge:
        for top in ("bin", "sbin", "lib", "lib64"):
            host.local(f"/usr/{top}").mkdir(parents=True, exist_ok=True)
            host.put_link(f"usr/{top}", f"/{top}")
    for path in ("/etc", "/tmp", "/run", "/boot"):  # noqa: S108 - the simulated host's, under its root
        host.local(path).mkdir(parents=True, exist_ok=True)
    host.put("/etc/os-release", distro.os_release)
    host.put("/proc/sys/kernel/osrelease", distro.kernel + "\n")
    host.put(f"/lib/modules/{distro.kernel}/kernel/drivers/net/ethernet/netronome/nfp/nfp{distro.module_suffix}", "ELF")
    host.set_state("os", {"uid": uid, "initramfs": distro.initramfs, "dracut_image": distro.dracut_image,
                          "firmware_suffix": distro.firmware_suffix})
    conf_dir = "/etc/dracut.conf.d" if distro.initramfs == "dracut" else "/etc/initramfs-tools/hooks"
    host.local(conf_dir).mkdir(parents=True, exist_ok=True)  # shipped by the initramfs tool's package
    dracut = distro.initramfs == "dracut"
    image = distro.dracut_image.format(kver=distro.kernel) if dracut else f"/boot/initrd.img-{distro.kernel}"
    host.put(image, "".join(m.format(kver=distro.kernel) + "\n" for m in os_tools.BASE_MEMBERS))
    # the rest of the machine: a host bridge and an Intel X710 the node boots from
    add_pci_function(host, "0000:00:00.0", "8086", "2020")
    add_pci_function(host, "0000:3b:00.0", "8086", "1572", driver="i40e")
    add_netdev(host, "0000:3b:00.0", "eno1", port_name=None)
    host.set_state("ovs", {"hw_offload": True})


def _firmware(host: SimulatedHost, spec: CardSpec, *, flower: bool = True) -> None:
    """What the linux-firmware and Agilio firmware packages install."""
    suffix = (host.state("os") or {}).get("firmware_suffix", "")
    install_nic_firmware(host, spec.board_id, suffix=suffix)
    if flower and spec.assembly == "AMDA0081":
        install_flower_firmware(host, "AMDA0097", suffix=suffix)  # the Agilio package: no AMDA0081 file
    elif flower:
        install_flower_firmware(host, spec.assembly, board_id=spec.board_id, suffix=suffix)


def _agilio(distro: Distro, *specs: CardSpec, flower: bool = True, uid: int = 0) -> Callable[[SimulatedHost], None]:
    def provision(host: SimulatedHost) -> None:
        _os(host, distro, uid=uid)
        for spec in specs:
            provision_card(host, spec)
            _firmware(host, spec, flower=flower)
        nfp.load_driver(host)  # the node booted: nfp loaded its default (nic) firmware
    return provision


CARD = CardSpec("0000:04:00.0")
SECOND_CARD = CardSpec("0000:81:00.0", serial="00-15-4d-13-5a-11-10-ff", assembly_serial="135a11")
AMDA0081_CARD = CardSpec("0000:04:00.0", board_id="AMDA0081-0001", media="1x40", totalvfs=48)
CORIGINE_CARD = CardSpec("0000:04:00.0", vendor="1da8", manufacturer="CSA", serial="00-15-4d-14-02-7e-10-ff",
                         assembly_serial="14027e")
NFP3800_CARD = CardSpec("0000:04:00.0", board_id="AMDA2001-1003", device="3800", media="2x25", totalvfs=48,
                        manufacturer="CSA", model="mozart", revision="01", serial="00-15-4d-16-00-11-10-ff",
                        assembly_serial="000111")
"""The devlink info example of Documentation/networking/device_drivers/ethernet/netronome/nfp.rst."""


def _bare(host: SimulatedHost) -> None:
    _os(host, UBUNTU_2204)


def _flaky_modprobe(host: SimulatedHost) -> None:
    _agilio(UBUNTU_2204, CARD)(host)
    inject(host, fail={"modprobe": 1})


def _no_devlink(host: SimulatedHost) -> None:
    _agilio(UBUNTU_2204, CARD)(host)
    inject(host, absent=["devlink"])


def _converged(host: SimulatedHost) -> None:
    """As the corigine-offload pipeline leaves a node (default parameters)."""
    from tasks.corigine.initramfs import HOOK, render_hook  # the hook and the record are the steps' own text
    from tasks.corigine.loaded import card_record_path, render_card_record

    _os(host, UBUNTU_2204)
    provision_card(host, CARD)
    _firmware(host, CARD)
    link = f"{FW_DIR}/pci-{CARD.pci_address}.nffw"
    host.put_link("flower/nic_AMDA0097.nffw", link)
    host.put(HOOK, render_hook([link, host.realpath(f"{FW_DIR}/flower/nic_AMDA0097.nffw")]))
    host.local(HOOK).chmod(0o755)
    os_tools.update_initramfs(host, ("update-initramfs", "-u", "-k", UBUNTU_2204.kernel), 60)
    nfp.load_driver(host)
    nfp.write_numvfs(host, f"/sys/bus/pci/devices/{CARD.pci_address}/sriov_numvfs", "4", 10)
    host.put(card_record_path(CARD.pci_address), render_card_record({
        "vendor": CARD.vendor, "device": CARD.device, "assembly": CARD.assembly, "board_id": CARD.board_id,
        "port_speeds": CARD.port_speeds}))
    (host.node_dir / "ops.log").unlink(missing_ok=True)  # provisioning is not a side effect of a step


PROFILES: dict[str, Profile] = {
    "bare": Profile(_bare, description="a Linux host with no SmartNIC"),
    "agilio-cx": Profile(_agilio(UBUNTU_2204, CARD), NFD_LABEL,
                         "one AMDA0097 card on nic firmware (legacy), no firmware link, no VFs"),
    "agilio-cx-split-usr": Profile(_agilio(UBUNTU_2204_SPLIT_USR, CARD), NFD_LABEL,
                                   "agilio-cx where /lib is a directory, not a link to usr/lib"),
    "agilio-cx-rocky9": Profile(_agilio(ROCKY_9, CARD), NFD_LABEL, "one AMDA0097 card on Rocky 9"),
    "agilio-cx-suse": Profile(_agilio(SLES_15, CARD), NFD_LABEL, "one AMDA0097 card on SLES 15 SP5, firmware .xz"),
    "agilio-cx-corigine": Profile(_agilio(UBUNTU_2204, CORIGINE_CARD), nfd_label("1da8"),
                                  "a Corigine-branded (1da8) AMDA0097 card"),
    "agilio-cx-nfp3800": Profile(_agilio(ROCKY_9, NFP3800_CARD), NFD_LABEL,
                                 "an NFP3800 card (VFs 3803) on Rocky 9, booting its flash firmware"),
    "agilio-cx-dual": Profile(_agilio(ROCKY_9, CARD, SECOND_CARD), NFD_LABEL, "two AMDA0097 cards on Rocky 9"),
    "agilio-cx-amda0081": Profile(_agilio(CENTOS_STREAM_8, AMDA0081_CARD), NFD_LABEL,
                                  "an AMDA0081 card (runs AMDA0097 firmware) on CentOS Stream 8"),
    "agilio-cx-converged": Profile(_converged, NFD_LABEL, "already converged: flower, link, initramfs, 4 VFs"),
    "agilio-cx-flaky-modprobe": Profile(_flaky_modprobe, NFD_LABEL, "agilio-cx whose first modprobe fails"),
    "agilio-cx-no-flower-firmware": Profile(_agilio(UBUNTU_2204, CARD, flower=False), NFD_LABEL,
                                            "agilio-cx without the flower firmware package"),
    "agilio-cx-no-devlink": Profile(_no_devlink, NFD_LABEL,
                                    "agilio-cx without devlink: assembly from the ethtool dump, mode from ethtool -i"),
    "agilio-cx-nonroot": Profile(_agilio(UBUNTU_2204, CARD, uid=1000), NFD_LABEL, "agilio-cx, agent not root"),
    "centos7-old-kernel": Profile(_agilio(CENTOS_7, CARD), NFD_LABEL, "an Agilio card on CentOS 7 (kernel 3.10)"),
}

EMULATORS: list[Callable[[SimulatedHost], None]] = [
    nfp.install, nfp_tools.install, ovs.install, os_tools.install,
]
