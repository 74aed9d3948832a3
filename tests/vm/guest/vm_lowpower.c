/* SPDX-License-Identifier: MIT */
/*
 * Guest test "lowpower": the transport's low-power entry/exit (VFIO device
 * feature LOW_POWER_ENTRY/EXIT on vfio-pci) around releasing the CPU mapping,
 * as the driver's runtime PM does it.
 *
 *  - write data through the BAR2 mmap, release the mapping, low_power_enter;
 *  - a second entry is refused; a mapping kept across entry (what the driver
 *    must never do) raises SIGBUS on touch: the kernel zapped it;
 *  - low_power_exit; re-mmap: the data is intact; the host finds it in its
 *    file too; a wake eventfd entry/exit cycle works.
 */
#include <setjmp.h>
#include <signal.h>

#include "vm_dev.h"

#define LP_SEED 0x4c4f5750ull /* "LOWP" */
#define LP_LEN (1u << 20)

static sigjmp_buf touch_jmp;

static void on_sigbus(int sig)
{
	siglongjmp(touch_jmp, sig);
}

/* Read one word; 0 when it worked, else the signal it raised. */
static int touch(volatile uint64_t *p, uint64_t *val)
{
	int sig = sigsetjmp(touch_jmp, 1);

	if (sig == 0)
		*val = *p;
	return sig;
}

static void *map_bar2(struct vfio_dev *dev, const char *what)
{
	void *p = NULL;
	int rc = dev->ops->region_mmap(dev, VFIO_REGION_BAR2, 0, VM_SHM_SIZE, PROT_READ | PROT_WRITE,
				       &p);

	VM_REQUIRE(rc == 0, "region_mmap(BAR2) %s -> %d", what, rc);
	return p;
}

static size_t mismatches(volatile uint64_t *m)
{
	size_t bad = 0;

	for (uint32_t i = 0; i < LP_LEN / 8; i++)
		bad += m[VM_SHM_LOWPOWER_OFF / 8 + i] != vm_pattern(LP_SEED, i);
	return bad;
}

int main(void)
{
	const char *bdf = vm_bdf("UGPU_VM_SHM");
	struct sigaction sa = { .sa_handler = on_sigbus };
	struct vfio_dev *dev;
	volatile uint64_t *m, *kept;
	uint64_t v = 0, ev = 0;
	size_t bad;
	int rc, sig, efd;

	sigaction(SIGBUS, &sa, NULL);
	dev = vm_open_as(bdf, VM_IVSHMEM_ID, "ivshmem-plain");
	VM_REQUIRE(dev->ops->low_power_enter && dev->ops->low_power_exit,
		   "vfio-pci transport has low_power_enter/exit");

	m = map_bar2(dev, "for the data");
	for (uint32_t i = 0; i < LP_LEN / 8; i++)
		m[VM_SHM_LOWPOWER_OFF / 8 + i] = vm_pattern(LP_SEED, i);
	/* The driver releases its CPU mappings before the device sleeps. */
	VM_CHECK(dev->ops->region_munmap(dev, (void *)m, VM_SHM_SIZE) == 0, "released the mapping");
	/* ...and this one is kept on purpose, to see what a forgotten one does. */
	kept = map_bar2(dev, "kept across entry");

	rc = dev->ops->low_power_enter(dev, -1);
	VM_REQUIRE(rc == 0, "low_power_enter -> %d", rc);
	rc = dev->ops->low_power_enter(dev, -1);
	VM_CHECK(rc < 0, "a second low_power_enter is refused -> %d (%s)", rc,
		 rc ? strerror(-rc) : "accepted");
	sig = touch(kept + VM_SHM_LOWPOWER_OFF / 8, &v);
	VM_CHECK(sig == SIGBUS, "touching a mapping kept across entry raises SIGBUS (got %s)",
		 sig ? strsignal(sig) : "no signal");
	rc = dev->ops->region_read(dev, VFIO_REGION_BAR2, VM_SHM_LOWPOWER_OFF, &v, sizeof(v));
	vm_note("region_read while in low power -> %d (value %s)", rc,
		rc ? "-" : v == vm_pattern(LP_SEED, 0) ? "intact" : "DIFFERENT");

	rc = dev->ops->low_power_exit(dev);
	VM_REQUIRE(rc == 0, "low_power_exit -> %d", rc);
	sig = touch(kept + VM_SHM_LOWPOWER_OFF / 8, &v);
	VM_CHECK(sig == 0 && v == vm_pattern(LP_SEED, 0),
		 "after exit the kept mapping faults back in (%s)", sig ? strsignal(sig) : "ok");
	VM_CHECK(dev->ops->region_munmap(dev, (void *)kept, VM_SHM_SIZE) == 0,
		 "released the kept mapping");

	m = map_bar2(dev, "again after exit");
	bad = mismatches(m);
	VM_CHECK(bad == 0, "data written before low power is intact (%zu words differ)", bad);
	VM_CHECK(dev->ops->region_munmap(dev, (void *)m, VM_SHM_SIZE) == 0, "released it");
	vm_host("check-vram %#llx %#x %#llx", VM_SHM_LOWPOWER_OFF, LP_LEN, LP_SEED);

	rc = dev->ops->low_power_exit(dev);
	vm_note("low_power_exit when not in low power -> %d (%s)", rc, rc ? strerror(-rc) : "ok");

	/* With a wake eventfd: the kernel may wake the device itself and say so. */
	efd = eventfd(0, EFD_CLOEXEC);
	VM_REQUIRE(efd >= 0, "eventfd");
	rc = dev->ops->low_power_enter(dev, efd);
	VM_CHECK(rc == 0, "low_power_enter(wake eventfd) -> %d", rc);
	if (rc == 0) {
		rc = dev->ops->low_power_exit(dev);
		VM_CHECK(rc == 0, "low_power_exit -> %d", rc);
		rc = vm_wait_eventfd(efd, 100, &ev);
		vm_note("wake eventfd after an explicit exit: %s", rc ? "not signalled" : "signalled");
	}
	m = map_bar2(dev, "after the wake cycle");
	VM_CHECK(mismatches(m) == 0, "data still intact after the wake cycle");
	VM_CHECK(dev->ops->region_munmap(dev, (void *)m, VM_SHM_SIZE) == 0, "released it");
	dev->ops->close(dev);
	close(efd);
	return vm_finish();
}
