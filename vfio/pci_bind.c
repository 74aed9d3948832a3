/* SPDX-License-Identifier: MIT */
/*
 * vfio-pci bind and give-back, with every check before the first change
 * (pci_bind.h), and who uses a device. All paths hang off struct pci_paths
 * so the tests run it against a fake sysfs/proc tree.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vfio/pci_bind.h"

#define BIND_WAIT_MS 2000
#define USE_WALK_DEPTH 6 /* .../BDF/ata1/host0/target0:0:0/0:0:0:0/block/sda/sda1 */
/* room for a path plus a component or two (keeps -Wformat-truncation quiet) */
#define LONG_PATH (PATH_MAX + 512)
#define IFF_UP_BIT 0x1 /* <linux/if.h> IFF_UP */

/* Append ", text" (or "text" first) to @buf; NULL is fine. */
static void append(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void append(char *buf, size_t len, const char *fmt, ...)
{
	size_t used;
	va_list ap;

	if (!buf || !len)
		return; /* @why may be NULL */
	used = strnlen(buf, len);
	if (used + 3 >= len)
		return;
	if (used) {
		memcpy(buf + used, ", ", 3);
		used += 2;
	}
	va_start(ap, fmt);
	vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
}

/* ---- who uses a device ------------------------------------------------ */

int pci_path_holders(const struct pci_paths *p, const char *path, char *who, size_t len)
{
	char dir[LONG_PATH], link[LONG_PATH], target[PATH_MAX], comm[64];
	struct dirent *pe, *fe;
	DIR *pd, *fd;
	int count = 0;

	if (who && len)
		who[0] = '\0';
	pd = opendir(pci_proc_dir(p));
	if (!pd)
		return 0;
	while ((pe = readdir(pd))) {
		bool hit = false;

		if (pe->d_name[0] < '1' || pe->d_name[0] > '9')
			continue;
		snprintf(dir, sizeof(dir), "%s/%s/fd", pci_proc_dir(p), pe->d_name);
		fd = opendir(dir);
		if (!fd)
			continue; /* gone, or not ours to see */
		while (!hit && (fe = readdir(fd))) {
			ssize_t n;

			if (fe->d_name[0] == '.' ||
			    (size_t)snprintf(link, sizeof(link), "%s/%s", dir, fe->d_name) >= sizeof(link))
				continue;
			n = readlink(link, target, sizeof(target) - 1);
			if (n <= 0)
				continue;
			target[n] = '\0';
			hit = !strcmp(target, path);
		}
		closedir(fd);
		if (!hit)
			continue;
		count++;
		snprintf(dir, sizeof(dir), "%s/%s/comm", pci_proc_dir(p), pe->d_name);
		if (pci_read_attr(dir, comm, sizeof(comm)))
			snprintf(comm, sizeof(comm), "?");
		if (who)
			append(who, len, "pid %s (%s)", pe->d_name, comm);
	}
	closedir(pd);
	return count;
}

int pci_holders(const struct pci_paths *p, const char *bdf, char *who, size_t len)
{
	char path[LONG_PATH], cdev[300];
	size_t used;
	int g, n = 0;

	if (who && len)
		who[0] = '\0';
	g = pci_iommu_group(p, bdf);
	if (g == -ENODEV)
		return g;
	if (g >= 0) {
		snprintf(path, sizeof(path), "%s/vfio/%d", p->dev, g);
		n += pci_path_holders(p, path, who, len);
	}
	/* the iommufd cdev: <sysfs>/.../BDF/vfio-dev/vfioN */
	if (pci_dev_path(p, bdf, "vfio-dev", path, sizeof(path)) == 0) {
		DIR *d = opendir(path);
		struct dirent *e;

		while (d && (e = readdir(d))) {
			if (strncmp(e->d_name, "vfio", 4))
				continue;
			snprintf(cdev, sizeof(cdev), "%s", e->d_name);
			snprintf(path, sizeof(path), "%s/vfio/devices/%s", p->dev, cdev);
			used = who ? strnlen(who, len) : 0;
			n += pci_path_holders(p, path, who ? who + used : NULL, who ? len - used : 0);
		}
		if (d)
			closedir(d);
	}
	return n;
}

/* "maj:min" is mounted (<proc>/self/mountinfo, field 3)? */
static bool is_mounted(const struct pci_paths *p, const char *majmin, char *where, size_t len)
{
	char path[PATH_MAX], line[4096], dev[32], mnt[2048];
	bool hit = false;
	FILE *f;

	snprintf(path, sizeof(path), "%s/self/mountinfo", pci_proc_dir(p));
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!hit && fgets(line, sizeof(line), f))
		if (sscanf(line, "%*s %*s %31s %*s %2047s", dev, mnt) == 2 && !strcmp(dev, majmin)) {
			snprintf(where, len, "%s", mnt);
			hit = true;
		}
	fclose(f);
	return hit;
}

/* /dev/@name is active swap (<proc>/swaps)? */
static bool is_swap(const struct pci_paths *p, const char *name)
{
	char path[PATH_MAX], line[1024], want[300];
	bool hit = false;
	FILE *f;

	snprintf(path, sizeof(path), "%s/swaps", pci_proc_dir(p));
	snprintf(want, sizeof(want), "/dev/%s", name);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!hit && fgets(line, sizeof(line), f))
		hit = !strncmp(line, want, strlen(want)) &&
		      (line[strlen(want)] == ' ' || line[strlen(want)] == '\t');
	fclose(f);
	return hit;
}

/* A block device (a disk or a partition) at @dir named @name. */
static void block_use(const struct pci_paths *p, const char *dir, const char *name, char *why,
		      size_t len)
{
	char path[LONG_PATH], majmin[32], where[2048];
	struct dirent *e;
	DIR *d;

	snprintf(path, sizeof(path), "%s/dev", dir);
	if (pci_read_attr(path, majmin, sizeof(majmin)) == 0 &&
	    is_mounted(p, majmin, where, sizeof(where)))
		append(why, len, "/dev/%s is mounted on %s", name, where);
	if (is_swap(p, name))
		append(why, len, "/dev/%s is active swap", name);
	snprintf(path, sizeof(path), "%s/holders", dir);
	d = opendir(path);
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.')
			append(why, len, "/dev/%s is held by %s", name, e->d_name);
	if (d)
		closedir(d);
}

/* A network interface at @dir named @name. */
static void net_use(const char *dir, const char *name, char *why, size_t len)
{
	char path[LONG_PATH], flags[32];

	snprintf(path, sizeof(path), "%s/flags", dir);
	if (pci_read_attr(path, flags, sizeof(flags)) == 0 && (strtoul(flags, NULL, 16) & IFF_UP_BIT))
		append(why, len, "network interface %s is up (ip link set %s down)", name, name);
}

/* Walk the device's own subtree (never following symlinks out of it) for
 * class devices: block devices and network interfaces. */
static void walk_uses(const struct pci_paths *p, const char *dir, int depth, char *why, size_t len)
{
	char path[PATH_MAX], link[LONG_PATH], sub[64];
	struct dirent *e;
	struct stat st;
	DIR *d;

	if (depth > USE_WALK_DEPTH || !(d = opendir(dir)))
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || (size_t)snprintf(path, sizeof(path), "%s/%s", dir,
							     e->d_name) >= sizeof(path))
			continue;
		if (lstat(path, &st) || !S_ISDIR(st.st_mode))
			continue;
		snprintf(link, sizeof(link), "%s/subsystem", path);
		pci_link_name(link, sub, sizeof(sub));
		if (!strcmp(sub, "block"))
			block_use(p, path, e->d_name, why, len);
		else if (!strcmp(sub, "net"))
			net_use(path, e->d_name, why, len);
		walk_uses(p, path, depth + 1, why, len);
	}
	closedir(d);
}

int pci_in_use(const struct pci_paths *p, const char *bdf, char *why, size_t len)
{
	char dir[PATH_MAX], real[PATH_MAX], uses[1024] = "";
	struct stat st;

	if (pci_dev_path(p, bdf, NULL, dir, sizeof(dir)) || stat(dir, &st))
		return -ENODEV;
	/* devices/BDF is a symlink into /sys/devices: walk the real tree */
	if (realpath(dir, real))
		snprintf(dir, sizeof(dir), "%s", real);
	walk_uses(p, dir, 0, uses, sizeof(uses));
	if (!uses[0])
		return 0;
	pci_say(why, len, "%s is in use: %s", bdf, uses);
	return -EBUSY;
}

/* ---- bind and give back ---------------------------------------------- */

/* Wait (bounded) for @bdf's driver to be @want; "": none; NULL: any. */
static int wait_driver(const struct pci_paths *p, const char *bdf, const char *want, int ms,
		       char *got, size_t got_len)
{
	char path[PATH_MAX], drv[64];
	struct timespec ts = { 0, 10 * 1000 * 1000 };

	pci_dev_path(p, bdf, "driver", path, sizeof(path));
	for (int i = 0; i <= ms / 10; i++) {
		pci_link_name(path, drv, sizeof(drv));
		if (want ? !strcmp(drv, want) : drv[0] != '\0') {
			if (got)
				snprintf(got, got_len, "%s", drv);
			return 0;
		}
		nanosleep(&ts, NULL);
	}
	return -EIO;
}

/* The kernel detaches a driver inside the write to unbind; this bounds the
 * wait for one that has not (a remove callback stuck on its hardware). */
static int write_checked(const char *path, const char *val, const char *bdf, char *why, size_t len)
{
	int ret = pci_write_attr(path, val);

	if (ret == -EACCES || ret == -EPERM || ret == -EROFS)
		pci_say(why, len, "cannot write %s: %s; run as root", path, strerror(-ret));
	else if (ret)
		pci_say(why, len, "writing %s for %s failed: %s", path, bdf, strerror(-ret));
	return ret == -EACCES || ret == -EROFS ? -EPERM : ret;
}

static int wait_unbound(const struct pci_paths *p, const char *bdf, const char *drv, char *why,
			size_t len)
{
	if (!wait_driver(p, bdf, "", BIND_WAIT_MS, NULL, 0))
		return 0;
	pci_say(why, len, "%s did not let go of %s within %d ms (see dmesg)", drv, bdf, BIND_WAIT_MS);
	return -EIO;
}

static int check_override_writable(const struct pci_paths *p, const char *bdf, char *why,
				   size_t len)
{
	char path[PATH_MAX];

	pci_dev_path(p, bdf, "driver_override", path, sizeof(path));
	if (access(path, W_OK)) {
		pci_say(why, len, "cannot write %s: %s; run as root", path, strerror(errno));
		return -EPERM;
	}
	return 0;
}

static void state_path(const struct pci_paths *p, const char *bdf, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s.driver", pci_state_dir(p), bdf);
}

/* Record the driver @bdf has before bind ("" for none). */
static int record_driver(const struct pci_paths *p, const char *bdf, const char *drv, char *why,
			 size_t len)
{
	char path[PATH_MAX];
	int fd, ret = 0;

	if (mkdir(pci_state_dir(p), 0755) && errno != EEXIST) {
		ret = -errno;
		pci_say(why, len, "cannot create %s to record the driver of %s: %s", pci_state_dir(p),
			bdf, strerror(-ret));
		return ret == -EACCES ? -EPERM : ret;
	}
	state_path(p, bdf, path, sizeof(path));
	/* A device without a driver keeps the record it has: a bind that failed
	 * after the unbind left it so, and the retry must not forget nvme for "".
	 * A device with a driver: that driver is the truth. */
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (drv[0] ? O_TRUNC : O_EXCL), 0644);
	if (fd < 0 && errno == EEXIST)
		return 0;
	if (fd < 0)
		ret = -errno;
	else if (write(fd, drv, strlen(drv)) != (ssize_t)strlen(drv))
		ret = -EIO;
	if (fd >= 0)
		close(fd);
	if (ret)
		pci_say(why, len, "cannot record the driver of %s in %s: %s", bdf, path,
			strerror(-ret));
	return ret;
}

/* The recorded driver: 0 (@drv may be ""), -ENOENT no record. */
static int recorded_driver(const struct pci_paths *p, const char *bdf, char *drv, size_t len)
{
	char path[PATH_MAX];

	state_path(p, bdf, path, sizeof(path));
	return pci_read_attr(path, drv, len);
}

static void forget_driver(const struct pci_paths *p, const char *bdf)
{
	char path[PATH_MAX];

	state_path(p, bdf, path, sizeof(path));
	unlink(path);
}

/*
 * Take @bdf off its driver @cur ("" for none) and give it to @rec, the driver
 * it had before bind ("": none; NULL: no record, the kernel's probe decides).
 * A @cur other than vfio-pci (unbind --force) is taken off and left off.
 * @back receives the driver the device ends on (may be NULL).
 */
static int give_back(const struct pci_paths *p, const char *bdf, const char *cur,
		     const char *rec, char *back, size_t back_len, char *why, size_t len)
{
	bool foreign = cur[0] && strcmp(cur, "vfio-pci");
	const char *aim = rec && rec[0] && !foreign ? rec : NULL;
	char path[PATH_MAX], probe[PATH_MAX];
	int ret;

	if (back && back_len)
		back[0] = '\0';
	pci_dev_path(p, bdf, "driver_override", path, sizeof(path));
	/* a lone newline clears the override */
	ret = write_checked(path, aim ? aim : "\n", bdf, why, len);
	if (ret)
		return ret;
	if (cur[0]) {
		char unbind[PATH_MAX];

		pci_dev_path(p, bdf, "driver/unbind", unbind, sizeof(unbind));
		ret = write_checked(unbind, bdf, bdf, why, len);
		if (!ret)
			ret = wait_unbound(p, bdf, cur, why, len);
		if (ret)
			return ret;
	}
	if (foreign)
		return 0; /* --force on a foreign driver: off, and left off */
	if (rec && !rec[0]) {
		forget_driver(p, bdf); /* it had no driver before bind: none now */
		return 0;
	}
	snprintf(probe, sizeof(probe), "%s/bus/pci/drivers_probe", p->sysfs);
	ret = write_checked(probe, bdf, bdf, why, len);
	if (ret)
		return ret;
	ret = wait_driver(p, bdf, aim, BIND_WAIT_MS, back, back_len);
	if (aim) {
		/* the override did its job (or failed): future probes are the kernel's */
		int r2 = write_checked(path, "\n", bdf, why, len);

		if (ret) {
			pci_say(why, len, "%s is off vfio-pci, but %s did not take it back (see dmesg; echo %s > %s/bus/pci/drivers/%s/bind)",
				bdf, aim, bdf, p->sysfs, aim);
			return -EIO;
		}
		if (r2)
			return r2;
	}
	forget_driver(p, bdf);
	return 0; /* without a record, no driver taking it is an answer too: back = "" */
}

/* Every check of one device before a bind; fills @d. */
static int bind_check(const struct pci_paths *p, const char *bdf_in, const char *const *set,
		      size_t nset, unsigned flags, struct pci_dev_desc *d, char *why, size_t len)
{
	char path[PATH_MAX];
	struct stat st;
	int ret;

	if (pci_describe(p, bdf_in, d)) {
		if (!d->bdf[0])
			pci_say(why, len, "'%s' is not a PCI address (expected DDDD:BB:DD.F)", bdf_in);
		else
			pci_say(why, len, "no PCI device %s", d->bdf);
		return d->bdf[0] ? -ENODEV : -EINVAL;
	}
	if (!strcmp(d->driver, "vfio-pci"))
		return 0;
	snprintf(path, sizeof(path), "%s/bus/pci/drivers/vfio-pci", p->sysfs);
	if (stat(path, &st)) {
		pci_say(why, len, "the vfio-pci driver is not loaded: modprobe vfio-pci");
		return -ENOENT;
	}
	ret = pci_group_check_with(p, d->bdf, set, nset, why, len);
	if (ret == -ENOENT || ret == -ENODEV || (ret && !(flags & PCI_BIND_FORCE))) {
		if (ret == -EBUSY)
			append(why, len, "or bind them together (ugpuctl bind BDF BDF...), or --force");
		return ret;
	}
	ret = pci_in_use(p, d->bdf, why, len);
	if (ret && !(flags & PCI_BIND_FORCE)) {
		append(why, len, "nothing was changed; stop using it first, or --force");
		return ret;
	}
	return check_override_writable(p, d->bdf, why, len);
}

/*
 * A bind that failed after its first change puts back what it changed:
 * the override only while the old driver still has the device, else the
 * whole give-back to the old driver. @why already says what failed; what the
 * undoing did is added to it.
 */
static void bind_undo(const struct pci_paths *p, const struct pci_dev_desc *d, char *why,
		      size_t len)
{
	char path[PATH_MAX], back[64], undo[512] = "";
	struct pci_dev_desc now;

	if (pci_describe(p, d->bdf, &now))
		return;
	if (d->driver[0] && !strcmp(now.driver, d->driver)) {
		pci_dev_path(p, d->bdf, "driver_override", path, sizeof(path));
		pci_write_attr(path, "\n");
		forget_driver(p, d->bdf);
		append(why, len, "nothing was changed (the override is cleared)");
		return;
	}
	if (give_back(p, d->bdf, now.driver, d->driver, back, sizeof(back), undo, sizeof(undo)))
		append(why, len, "giving it back failed too: %s", undo);
	else
		append(why, len, "it is back on %s", back[0] ? back : "no driver, as before");
}

static int bind_one(const struct pci_paths *p, const struct pci_dev_desc *d, char *why, size_t len)
{
	char path[PATH_MAX];
	int ret;

	ret = record_driver(p, d->bdf, d->driver, why, len);
	if (ret)
		return ret;
	pci_dev_path(p, d->bdf, "driver_override", path, sizeof(path));
	ret = write_checked(path, "vfio-pci", d->bdf, why, len);
	if (ret)
		return ret;
	if (d->driver[0]) {
		pci_dev_path(p, d->bdf, "driver/unbind", path, sizeof(path));
		ret = write_checked(path, d->bdf, d->bdf, why, len);
		if (!ret)
			ret = wait_unbound(p, d->bdf, d->driver, why, len);
		if (ret)
			goto out_undo;
	}
	snprintf(path, sizeof(path), "%s/bus/pci/drivers_probe", p->sysfs);
	ret = write_checked(path, d->bdf, d->bdf, why, len);
	if (ret)
		goto out_undo;
	if (wait_driver(p, d->bdf, "vfio-pci", BIND_WAIT_MS, NULL, 0)) {
		pci_say(why, len, "%s did not bind to vfio-pci (see dmesg: no IOMMU group, or vfio-pci refused it)",
			d->bdf);
		ret = -EIO;
		goto out_undo;
	}
	return 0;

out_undo:
	bind_undo(p, d, why, len);
	return ret;
}

int pci_bind_vfio(const struct pci_paths *p, const char *const *bdfs, size_t n, unsigned flags,
		  char *why, size_t len)
{
	struct pci_dev_desc *d;
	const char **set;
	size_t i;
	int ret = 0;

	if (!n)
		return -EINVAL;
	d = calloc(n, sizeof(*d));
	set = calloc(n, sizeof(*set));
	if (!d || !set) {
		ret = -ENOMEM;
		goto out_free;
	}
	/* the set, normalized, for the group check */
	for (i = 0; i < n; i++) {
		if (pci_bdf_normalize(bdfs[i], d[i].bdf)) {
			pci_say(why, len, "'%s' is not a PCI address (expected DDDD:BB:DD.F)", bdfs[i]);
			ret = -EINVAL;
			goto out_free;
		}
		set[i] = d[i].bdf;
	}
	for (i = 0; i < n && !ret; i++) {
		char bdf[PCI_BDF_LEN];

		memcpy(bdf, d[i].bdf, sizeof(bdf));
		ret = bind_check(p, bdf, set, n, flags, &d[i], why, len);
		memcpy(d[i].bdf, bdf, sizeof(bdf)); /* pci_describe() rewrote it: the same */
	}
	for (i = 0; i < n && !ret; i++)
		if (strcmp(d[i].driver, "vfio-pci"))
			ret = bind_one(p, &d[i], why, len);
out_free:
	free(set);
	free(d);
	return ret;
}

int pci_unbind_vfio(const struct pci_paths *p, const char *bdf_in, unsigned flags, char *back,
		    size_t back_len, char *why, size_t len)
{
	char bdf[PCI_BDF_LEN], rec[64], who[512];
	struct pci_dev_desc d;
	bool have_rec;
	int ret, held;

	if (back && back_len)
		back[0] = '\0';
	if (pci_bdf_normalize(bdf_in, bdf)) {
		pci_say(why, len, "'%s' is not a PCI address (expected DDDD:BB:DD.F)", bdf_in);
		return -EINVAL;
	}
	if (pci_describe(p, bdf, &d)) {
		pci_say(why, len, "no PCI device %s", bdf);
		return -ENODEV;
	}
	if (d.driver[0] && strcmp(d.driver, "vfio-pci") && !(flags & PCI_BIND_FORCE)) {
		pci_say(why, len, "%s is bound to %s, not vfio-pci: nothing of ugpu's to give back; refusing to unbind it (--force unbinds it anyway)",
			bdf, d.driver);
		return -EBUSY;
	}
	if (!strcmp(d.driver, "vfio-pci")) {
		held = pci_holders(p, bdf, who, sizeof(who));
		if (held > 0 && !(flags & PCI_BIND_FORCE)) {
			pci_say(why, len, "%s is in use by %s: stop it first (--force unbinds anyway: the kernel asks the holder to let go and waits for it)",
				bdf, who);
			return -EBUSY;
		}
	}
	ret = check_override_writable(p, bdf, why, len);
	if (ret)
		return ret;
	have_rec = recorded_driver(p, bdf, rec, sizeof(rec)) == 0;
	return give_back(p, bdf, d.driver, have_rec ? rec : NULL, back, back_len, why, len);
}
