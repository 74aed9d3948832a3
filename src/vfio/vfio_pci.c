/* SPDX-License-Identifier: MIT */
/* Kernel vfio-pci transport (being written). */
#include <errno.h>

#include "src/vfio/transport.h"

int vfio_pci_open(struct ugpu_context *ctx, const char *bdf, struct vfio_dev **out)
{
	(void)ctx;
	(void)bdf;
	(void)out;
	return -ENOTSUP;
}
