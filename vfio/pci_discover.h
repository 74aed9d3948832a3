/* SPDX-License-Identifier: MIT */
/*
 * PCI discovery and vfio-pci binding, through sysfs (and libpciaccess for the
 * plain listing). The sysfs root and /dev are injectable (struct pci_paths)
 * so the logic runs against a fake tree in tests.
 *
 * Functions that can fail for a reason a person must act on fill @why (may
 * be NULL) with one line saying what to do.
 */
#ifndef UGPU_VFIO_PCI_DISCOVER_H
#define UGPU_VFIO_PCI_DISCOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Where the kernel's interfaces live: "/sys", "/dev" and "/proc" normally,
 * and where ugpuctl bind records the driver a device had ("/run/ugpu"; see
 * pci_bind.h). @proc and @state may be NULL: the defaults.
 */
struct pci_paths {
	const char *sysfs;
	const char *dev;
	const char *proc;
	const char *state;
};

/* @p's proc and state directories, defaults filled in. */
const char *pci_proc_dir(const struct pci_paths *p);
const char *pci_state_dir(const struct pci_paths *p);

extern const struct pci_paths pci_default_paths;

#define PCI_BDF_LEN 16 /* "0000:00:00.0" + NUL, rounded */

struct pci_dev_desc {
	char bdf[PCI_BDF_LEN];
	uint16_t vendor;
	uint16_t device;
	uint32_t class_code; /* 24 bits: base class, subclass, prog-if */
	int iommu_group; /* -1: no IOMMU group */
	char driver[64]; /* bound driver, "" when none */
};

/*
 * pci_bdf_normalize() - "01:00.0" or "0000:01:00.0" to "0000:01:00.0".
 * Returns: 0, -EINVAL when @in is not a BDF.
 */
int pci_bdf_normalize(const char *in, char out[PCI_BDF_LEN]);

/*
 * pci_describe() - one device as sysfs describes it.
 * Returns: 0, -ENODEV (no such device), -errno.
 */
int pci_describe(const struct pci_paths *p, const char *bdf, struct pci_dev_desc *d);

/*
 * pci_list_sysfs() - every device under <sysfs>/bus/pci/devices, sorted by
 * BDF. *@out comes from the C library's malloc (free() it: these are for tools,
 * not the driver's heap of base/alloc.h); *@n may be 0.
 * Returns: 0, -ENOMEM. A missing bus/pci directory is an empty list.
 */
int pci_list_sysfs(const struct pci_paths *p, struct pci_dev_desc **out, size_t *n);

/*
 * pci_list() - every device libpciaccess finds, with IOMMU group and driver
 * from sysfs. Falls back to pci_list_sysfs() when libpciaccess cannot start.
 * Returns: as pci_list_sysfs().
 */
int pci_list(struct pci_dev_desc **out, size_t *n);

/* The IOMMU group number of @bdf: >= 0, -ENOENT (no IOMMU group), -ENODEV. */
int pci_iommu_group(const struct pci_paths *p, const char *bdf);

/*
 * pci_group_check() - is @bdf's IOMMU group usable through vfio (every
 * device in it bound to vfio-pci, or to no driver)?
 * Returns: 0 viable, -EBUSY not viable (@why names the other devices and
 * their drivers), -ENOENT no IOMMU group, -ENODEV.
 */
int pci_group_check(const struct pci_paths *p, const char *bdf, char *why, size_t len);

/*
 * pci_group_check_with() - as pci_group_check(), counting the devices of
 * @with (@nwith normalized BDFs about to be bound to vfio-pci together with
 * @bdf) as bound to vfio-pci already.
 */
int pci_group_check_with(const struct pci_paths *p, const char *bdf, const char *const *with,
			 size_t nwith, char *why, size_t len);

/*
 * vfio_check_memlock() - can this process pin @need bytes for DMA?
 * type1 charges pinned pages to RLIMIT_MEMLOCK unless the process has
 * CAP_IPC_LOCK.
 * Returns: 0, -ENOMEM (@why says the limit, the need and how to raise it).
 */
int vfio_check_memlock(uint64_t need, char *why, size_t len);

/* The decision itself, for tests: @limit is RLIMIT_MEMLOCK's soft value
 * (UINT64_MAX = unlimited). */
int vfio_memlock_decide(uint64_t need, uint64_t limit, bool cap_ipc_lock, char *why, size_t len);

/* ---- sysfs helpers shared with pci_bind.c ---------------------------- */

/* One line for a person into @why (may be NULL), printf-style. */
void pci_say(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* <sysfs>/bus/pci/devices/@bdf[/@leaf] into @buf: 0, -ENAMETOOLONG. */
int pci_dev_path(const struct pci_paths *p, const char *bdf, const char *leaf, char *buf,
		 size_t len);
/* A small attribute, trailing newline and spaces stripped: 0, -errno. */
int pci_read_attr(const char *path, char *buf, size_t len);
/* Write @val (O_TRUNC, as a shell redirect): 0, -errno. */
int pci_write_attr(const char *path, const char *val);
/* The last component of the symlink @path points to, "" when none. */
void pci_link_name(const char *path, char *out, size_t len);

#endif
