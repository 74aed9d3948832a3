/* SPDX-License-Identifier: MIT */
/*
 * Guest test "unplug": a hot-unplug the driver lets happen, with a bound on
 * every wait.
 *
 * An eventfd is routed to the REQ irq (the kernel's "please release this
 * device") through set_irqs; the host sends QMP device_del for ivshmem; the
 * kernel signals REQ; the test releases the device the way the driver must
 * (region_munmap, then close through the transport) and the device leaves:
 * gone from the guest's sysfs here, QMP DEVICE_DELETED on the host (checked
 * by tests/vm/run.py). Data written through the BAR before the unplug is in
 * the host's memory-backend file afterwards (@@HOST check-vram).
 *
 * Needs someone to do the unplug: the VM runner (UGPU_VM_HOST=1) or a person
 * on a real machine (UGPU_VM_HOST=manual); skips without either.
 * Runs last: the device does not come back.
 */
#include <pthread.h>
#include <sys/stat.h>

#include "vm_dev.h"

#define UNPLUG_SEED 0x554e504cull /* "UNPL" */
#define UNPLUG_LEN (256u << 10)

static char host_reply[128];
static int host_rc;

/* Asks the host to unplug and waits for its verdict, while main() handles
 * the REQ and releases the device. */
static void *host_unplug(void *arg)
{
	(void)arg;
	host_rc = vm_host_call(host_reply, sizeof(host_reply), 25000, "unplug ivshmem");
	return NULL;
}

static bool present(const char *bdf)
{
	char p[256];
	struct stat st;

	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s", bdf);
	return stat(p, &st) == 0;
}

int main(void)
{
	const char *bdf = vm_bdf("UGPU_VM_SHM");
	struct vfio_dev_irq_info ii;
	struct vfio_dev *dev;
	volatile uint64_t *m;
	void *bar = NULL;
	uint64_t ev = 0;
	pthread_t host_thread;
	double t0, t1;
	int efd, rc;

	if (!vm_has_host())
		vm_skip("needs the VM runner to hot-unplug the device (UGPU_VM_HOST unset)");
	dev = vm_open_as(bdf, VM_IVSHMEM_ID, "ivshmem-plain");
	rc = dev->ops->region_mmap(dev, VFIO_REGION_BAR2, 0, VM_SHM_SIZE, PROT_READ | PROT_WRITE, &bar);
	VM_REQUIRE(rc == 0, "region_mmap(BAR2) -> %d", rc);
	m = bar;
	for (uint32_t i = 0; i < UNPLUG_LEN / 8; i++)
		m[VM_SHM_UNPLUG_OFF / 8 + i] = vm_pattern(UNPLUG_SEED, i);

	memset(&ii, 0, sizeof(ii));
	rc = dev->ops->irq_info(dev, VFIO_IRQ_REQ, &ii);
	VM_REQUIRE(rc == 0 && ii.count == 1, "REQ irq: %u vector (rc %d)", ii.count, rc);
	efd = eventfd(0, EFD_CLOEXEC);
	VM_REQUIRE(efd >= 0, "eventfd");
	rc = dev->ops->set_irqs(dev, VFIO_IRQ_REQ, 0, 1, &efd);
	VM_REQUIRE(rc == 0, "set_irqs(REQ -> eventfd) -> %d", rc);

	t0 = vm_now();
	rc = pthread_create(&host_thread, NULL, host_unplug, NULL);
	VM_REQUIRE(rc == 0, "thread for the host's answer -> %d", rc);
	rc = vm_wait_eventfd(efd, 10000, &ev);
	t1 = vm_now();
	VM_REQUIRE(rc == 0, "REQ eventfd signalled %.0f ms after the unplug request (rc %d, count %llu)",
		   (t1 - t0) * 1e3, rc, (unsigned long long)ev);
	VM_CHECK(present(bdf), "device still present while we hold it");
	VM_CHECK(m[VM_SHM_UNPLUG_OFF / 8] == vm_pattern(UNPLUG_SEED, 0),
		 "BAR2 still readable until released");

	/* Release: the mapping holds the device file too, so it goes first. */
	rc = dev->ops->region_munmap(dev, bar, VM_SHM_SIZE);
	VM_CHECK(rc == 0, "region_munmap(BAR2) -> %d", rc);
	dev->ops->close(dev);
	close(efd);
	t1 = vm_now();
	vm_note("released %.0f ms after the REQ", (t1 - t0) * 1e3);
	while (present(bdf) && vm_now() - t1 < 10.0)
		usleep(20000);
	VM_CHECK(!present(bdf), "device left the guest %.0f ms after release (%.0f ms after the request)",
		 (vm_now() - t1) * 1e3, (vm_now() - t0) * 1e3);
	/* The host's side: QEMU reports the device deleted (the guest must not
	 * power off before, or the eject is lost). */
	pthread_join(host_thread, NULL);
	if (vm_host_manual())
		vm_note("UGPU_VM_HOST=manual: the hypervisor's side of the removal is not checked");
	else
		VM_CHECK(host_rc == 0 && strncmp(host_reply, "deleted ", 8) == 0,
			 "host: QMP DEVICE_DELETED (reply \"%s\", rc %d)", host_rc ? "" : host_reply,
			 host_rc);
	vm_host("check-vram %#llx %#x %#llx", VM_SHM_UNPLUG_OFF, UNPLUG_LEN, UNPLUG_SEED);
	return vm_finish();
}
