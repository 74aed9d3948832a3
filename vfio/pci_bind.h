/* SPDX-License-Identifier: MIT */
/*
 * Handing PCI devices to vfio-pci and back (ugpuctl bind / unbind), and
 * finding out who uses a device.
 *
 * bind checks everything before it changes anything: the device exists,
 * vfio-pci is loaded, the device has an IOMMU group, the group will be
 * viable, the device is not in use (a disk with a mounted filesystem, swap
 * or a device-mapper/RAID holder; a network interface that is up), and
 * driver_override is writable. Only then does it record the driver the
 * device had in <state>/<BDF>.driver (/run/ugpu: gone at reboot, as the
 * binding is), set driver_override, unbind, and probe. A step failing after
 * the first change is undone (the device goes back to its driver).
 *
 * unbind gives the device back: it refuses a device not on vfio-pci, and a
 * device some process holds open through VFIO (both unless forced); then it
 * points driver_override at the recorded driver, unbinds from vfio-pci,
 * probes, waits for that driver to take the device, and clears
 * driver_override. Without a record (bound by another tool, or before a
 * reboot) it clears driver_override and lets the kernel probe, as SPDK's
 * setup.sh reset does: the driver whose id table matches takes it.
 *
 * Nothing here keeps state in memory: no locking. Two ugpuctl processes
 * binding the same device race as two shells writing sysfs would.
 */
#ifndef UGPU_VFIO_PCI_BIND_H
#define UGPU_VFIO_PCI_BIND_H

#include <stddef.h>

#include "vfio/pci_discover.h"

/* Go ahead although the device is in use, the group will not be viable, or
 * (unbind) the device is not on vfio-pci. */
#define PCI_BIND_FORCE 0x1u

/*
 * pci_bind_vfio() - hand @bdfs (@n of them, any BDF spelling) to vfio-pci.
 * All are checked first; nothing changes unless every check passes. The
 * devices of one IOMMU group may be bound together: each counts the others
 * as bound for the group's viability.
 * Returns: 0 (also when already bound), -EINVAL not a BDF, -ENODEV no such
 * device, -ENOENT vfio-pci not loaded or no IOMMU group, -EBUSY in use or
 * group not viable (@why says by what; PCI_BIND_FORCE goes ahead), -EPERM
 * not allowed (not root), -EIO the kernel did not bind it, -errno.
 */
int pci_bind_vfio(const struct pci_paths *p, const char *const *bdfs, size_t n, unsigned flags,
		  char *why, size_t len);

/*
 * pci_unbind_vfio() - give @bdf back to the driver it had before bind.
 * @back: receives that driver's name, "" when the device was left without
 * one (may be NULL).
 * Returns: 0 (also when not bound), -EINVAL, -ENODEV, -EBUSY bound to
 * another driver than vfio-pci or held open by a process (@why names it;
 * PCI_BIND_FORCE unbinds anyway, without a give-back for a foreign driver),
 * -EPERM, -EIO unbound but the driver did not take it back, -errno.
 */
int pci_unbind_vfio(const struct pci_paths *p, const char *bdf, unsigned flags, char *back,
		    size_t back_len, char *why, size_t len);

/*
 * pci_in_use() - is @bdf used through its current driver: a block device
 * with a mounted filesystem, active swap or a holder (dm, md), or a network
 * interface that is up? @why names each use.
 * Returns: 0 not in use, -EBUSY in use, -ENODEV.
 */
int pci_in_use(const struct pci_paths *p, const char *bdf, char *why, size_t len);

/*
 * pci_holders() - processes holding @bdf open through VFIO: its group
 * (<dev>/vfio/N) or its device cdev (<dev>/vfio/devices/vfioN), found by
 * reading <proc>/PID/fd. @who receives "pid 123 (ugpu-demo), ..." ("" when
 * none). Processes this one may not inspect are not seen.
 * Returns: how many processes, or -ENODEV / -errno.
 */
int pci_holders(const struct pci_paths *p, const char *bdf, char *who, size_t len);

/*
 * pci_path_holders() - the same for any path: the processes with an fd on
 * @path. Returns: how many.
 */
int pci_path_holders(const struct pci_paths *p, const char *path, char *who, size_t len);

#endif
