/* SPDX-License-Identifier: MIT */
/*
 * PCI discovery and vfio-pci binding through sysfs; libpciaccess for the
 * listing. All sysfs paths hang off struct pci_paths so tests can point the
 * logic at a fake tree. Nothing here keeps state: no locking needed.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pciaccess.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vfio/pci_discover.h"

const struct pci_paths pci_default_paths = { .sysfs = "/sys", .dev = "/dev", .proc = "/proc",
					    .state = "/run/ugpu" };

const char *pci_proc_dir(const struct pci_paths *p)
{
	return p->proc ? p->proc : pci_default_paths.proc;
}

const char *pci_state_dir(const struct pci_paths *p)
{
	return p->state ? p->state : pci_default_paths.state;
}

void pci_say(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!why || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

int pci_bdf_normalize(const char *in, char out[PCI_BDF_LEN])
{
	unsigned dom = 0, bus, dev, fn;
	int n = 0;

	if (!in)
		return -EINVAL;
	if (sscanf(in, "%4x:%2x:%2x.%1u%n", &dom, &bus, &dev, &fn, &n) == 4 && !in[n] && n == 12) {
		/* full form */
	} else if (dom = 0, n = 0,
		   sscanf(in, "%2x:%2x.%1u%n", &bus, &dev, &fn, &n) == 3 && !in[n] && n == 7) {
		/* short form, domain 0 */
	} else {
		return -EINVAL;
	}
	if (dev > 31 || fn > 7)
		return -EINVAL;
	snprintf(out, PCI_BDF_LEN, "%04x:%02x:%02x.%u", dom, bus, dev, fn);
	return 0;
}

int pci_dev_path(const struct pci_paths *p, const char *bdf, const char *leaf, char *buf,
		    size_t len)
{
	int n = snprintf(buf, len, "%s/bus/pci/devices/%s%s%s", p->sysfs, bdf, leaf ? "/" : "",
			 leaf ? leaf : "");

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Read a small sysfs attribute, trailing newline stripped. */
int pci_read_attr(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	return 0;
}

int pci_write_attr(const char *path, const char *val)
{
	/* O_TRUNC as a shell redirect does: harmless on sysfs, right on a fake tree */
	int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	ssize_t n;
	int err;

	if (fd < 0)
		return -errno;
	n = write(fd, val, strlen(val));
	err = n < 0 ? -errno : ((size_t)n != strlen(val) ? -EIO : 0);
	close(fd);
	return err;
}

static uint64_t read_hex(const char *path, bool *ok)
{
	char buf[32];

	*ok = pci_read_attr(path, buf, sizeof(buf)) == 0;
	return *ok ? strtoull(buf, NULL, 16) : 0;
}

/* Last path component of the symlink @path points to, or "" if none. */
void pci_link_name(const char *path, char *out, size_t len)
{
	char buf[PATH_MAX];
	ssize_t n = readlink(path, buf, sizeof(buf) - 1);
	const char *slash;

	out[0] = '\0';
	if (n <= 0)
		return;
	buf[n] = '\0';
	slash = strrchr(buf, '/');
	slash = slash ? slash + 1 : buf;
	/* Truncation is fine: names here are driver names and group numbers. */
	n = (ssize_t)strnlen(slash, len - 1);
	memcpy(out, slash, (size_t)n);
	out[n] = '\0';
}

int pci_iommu_group(const struct pci_paths *p, const char *bdf)
{
	char path[PATH_MAX], name[64];
	struct stat st;
	char *end;
	long g;

	if (pci_dev_path(p, bdf, NULL, path, sizeof(path)) || stat(path, &st))
		return -ENODEV;
	if (pci_dev_path(p, bdf, "iommu_group", path, sizeof(path)))
		return -ENAMETOOLONG;
	pci_link_name(path, name, sizeof(name));
	if (!name[0])
		return -ENOENT;
	g = strtol(name, &end, 10);
	if (*end || g < 0 || g > INT_MAX)
		return -ENOENT;
	return (int)g;
}

int pci_describe(const struct pci_paths *p, const char *bdf, struct pci_dev_desc *d)
{
	char path[PATH_MAX];
	struct stat st;
	bool ok;
	int g;

	memset(d, 0, sizeof(*d));
	if (pci_bdf_normalize(bdf, d->bdf))
		return -EINVAL;
	if (pci_dev_path(p, d->bdf, NULL, path, sizeof(path)) || stat(path, &st))
		return -ENODEV;
	pci_dev_path(p, d->bdf, "vendor", path, sizeof(path));
	d->vendor = (uint16_t)read_hex(path, &ok);
	pci_dev_path(p, d->bdf, "device", path, sizeof(path));
	d->device = (uint16_t)read_hex(path, &ok);
	pci_dev_path(p, d->bdf, "class", path, sizeof(path));
	d->class_code = (uint32_t)read_hex(path, &ok) & 0xffffff;
	g = pci_iommu_group(p, d->bdf);
	d->iommu_group = g >= 0 ? g : -1;
	pci_dev_path(p, d->bdf, "driver", path, sizeof(path));
	pci_link_name(path, d->driver, sizeof(d->driver));
	return 0;
}

static int desc_cmp(const void *a, const void *b)
{
	return strcmp(((const struct pci_dev_desc *)a)->bdf, ((const struct pci_dev_desc *)b)->bdf);
}

/* List the BDF-named entries of @dir into a growing array. */
static int list_dir(const struct pci_paths *p, const char *dir, struct pci_dev_desc **out,
		    size_t *n)
{
	struct pci_dev_desc *v = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *e;
	DIR *dp = opendir(dir);

	*out = NULL;
	*n = 0;
	if (!dp)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(dp))) {
		char bdf[PCI_BDF_LEN];

		if (pci_bdf_normalize(e->d_name, bdf) || strcmp(bdf, e->d_name))
			continue;
		if (cnt == cap) {
			struct pci_dev_desc *nv;

			cap = cap ? cap * 2 : 16;
			nv = (realloc)(v, cap * sizeof(*v)); /* the C library's: callers free() it */
			if (!nv) {
				(free)(v);
				closedir(dp);
				return -ENOMEM;
			}
			v = nv;
		}
		if (pci_describe(p, bdf, &v[cnt]) == 0)
			cnt++;
	}
	closedir(dp);
	if (cnt)
		qsort(v, cnt, sizeof(*v), desc_cmp);
	*out = v;
	*n = cnt;
	return 0;
}

int pci_list_sysfs(const struct pci_paths *p, struct pci_dev_desc **out, size_t *n)
{
	char dir[PATH_MAX];

	snprintf(dir, sizeof(dir), "%s/bus/pci/devices", p->sysfs);
	return list_dir(p, dir, out, n);
}

int pci_list(struct pci_dev_desc **out, size_t *n)
{
	struct pci_device_iterator *it;
	struct pci_device *pd;
	struct pci_dev_desc *v = NULL;
	size_t cnt = 0, cap = 0;

	*out = NULL;
	*n = 0;
	if (pci_system_init() != 0)
		return pci_list_sysfs(&pci_default_paths, out, n);
	it = pci_slot_match_iterator_create(NULL);
	while (it && (pd = pci_device_next(it))) {
		struct pci_dev_desc *d;
		char bdf[PCI_BDF_LEN];

		if (cnt == cap) {
			struct pci_dev_desc *nv;

			cap = cap ? cap * 2 : 16;
			nv = (realloc)(v, cap * sizeof(*v)); /* the C library's: callers free() it */
			if (!nv) {
				(free)(v);
				pci_iterator_destroy(it);
				pci_system_cleanup();
				return -ENOMEM;
			}
			v = nv;
		}
		d = &v[cnt++];
		snprintf(bdf, sizeof(bdf), "%04x:%02x:%02x.%u", pd->domain & 0xffff, pd->bus, pd->dev,
			 pd->func);
		/* sysfs for group and driver; libpciaccess for the ids */
		if (pci_describe(&pci_default_paths, bdf, d)) {
			memset(d, 0, sizeof(*d));
			snprintf(d->bdf, sizeof(d->bdf), "%s", bdf);
			d->iommu_group = -1;
		}
		d->vendor = pd->vendor_id;
		d->device = pd->device_id;
		d->class_code = pd->device_class & 0xffffff;
	}
	if (it)
		pci_iterator_destroy(it);
	pci_system_cleanup();
	if (cnt)
		qsort(v, cnt, sizeof(*v), desc_cmp);
	*out = v;
	*n = cnt;
	return 0;
}

/* A driver that leaves a group usable by vfio. */
static bool driver_is_vfio_ok(const char *drv)
{
	return !drv[0] || !strcmp(drv, "vfio-pci") || !strcmp(drv, "pci-stub") ||
	       !strcmp(drv, "pcieport");
}

static bool in_set(const char *bdf, const char *const *with, size_t nwith)
{
	for (size_t i = 0; i < nwith; i++)
		if (!strcmp(bdf, with[i]))
			return true;
	return false;
}

int pci_group_check(const struct pci_paths *p, const char *bdf, char *why, size_t len)
{
	return pci_group_check_with(p, bdf, NULL, 0, why, len);
}

int pci_group_check_with(const struct pci_paths *p, const char *bdf, const char *const *with,
			 size_t nwith, char *why, size_t len)
{
	char dir[PATH_MAX], others[512] = "";
	struct pci_dev_desc *v;
	size_t n, i;
	int g, ret, bad = 0;

	g = pci_iommu_group(p, bdf);
	if (g == -ENOENT) {
		pci_say(why, len, "%s has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line)",
		    bdf);
		return g;
	}
	if (g < 0) {
		pci_say(why, len, "no PCI device %s", bdf);
		return g;
	}
	snprintf(dir, sizeof(dir), "%s/kernel/iommu_groups/%d/devices", p->sysfs, g);
	ret = list_dir(p, dir, &v, &n);
	if (ret)
		return ret;
	for (i = 0; i < n; i++) {
		size_t used = strlen(others);

		if (!strcmp(v[i].bdf, bdf) || driver_is_vfio_ok(v[i].driver) ||
		    in_set(v[i].bdf, with, nwith))
			continue;
		bad++;
		snprintf(others + used, sizeof(others) - used, "%s%s (bound to %s)", used ? ", " : "",
			 v[i].bdf, v[i].driver);
	}
	(free)(v);
	if (bad) {
		pci_say(why, len,
		    "IOMMU group %d of %s is not viable: %s; bind every device of the group to vfio-pci (ugpuctl bind BDF) or unbind it",
		    g, bdf, others);
		return -EBUSY;
	}
	return 0;
}

int vfio_memlock_decide(uint64_t need, uint64_t limit, bool cap_ipc_lock, char *why, size_t len)
{
	if (cap_ipc_lock || limit == UINT64_MAX || limit >= need)
		return 0;
	pci_say(why, len,
	    "RLIMIT_MEMLOCK is %" PRIu64 " KiB but DMA needs %" PRIu64
	    " KiB pinned: raise it (ulimit -l %" PRIu64 ", LimitMEMLOCK= in the systemd unit, or memlock in /etc/security/limits.conf), or grant CAP_IPC_LOCK",
	    limit / 1024, (need + 1023) / 1024, (need + 1023) / 1024);
	return -ENOMEM;
}

/* CAP_IPC_LOCK (bit 14) in the effective set, from /proc/self/status. */
static bool have_cap_ipc_lock(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	bool r = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "CapEff:", 7)) {
			r = (strtoull(line + 7, NULL, 16) >> 14) & 1;
			break;
		}
	}
	fclose(f);
	return r;
}

int vfio_check_memlock(uint64_t need, char *why, size_t len)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_MEMLOCK, &rl))
		return 0; /* cannot tell: let the kernel decide */
	return vfio_memlock_decide(need, rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : rl.rlim_cur,
				   have_cap_ipc_lock(), why, len);
}
