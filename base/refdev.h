/* SPDX-License-Identifier: MIT */
/*
 * The reference device's registers as the driver sees them: the driver side
 * of docs/reference-device.md (which is normative). The device model in
 * tools/ugpu-sim/ has its own definitions; the spec is what both follow.
 */
#ifndef UGPU_SRC_REFDEV_H
#define UGPU_SRC_REFDEV_H

#include <stdint.h>

#define REFDEV_VENDOR_ID 0x5547
#define REFDEV_DEVICE_ID 0x0001

/* BAR0 */
#define REFDEV_REG_ID 0x0000
#define REFDEV_ID_MAGIC 0x55475055u
#define REFDEV_REG_VERSION 0x0004
#define REFDEV_REG_CAPS 0x0008
#define REFDEV_CAPS_COPY (1u << 0)
#define REFDEV_CAPS_GPUVM (1u << 1)
#define REFDEV_CAPS_FABRIC (1u << 2)
#define REFDEV_CAPS_COPY_SUM (1u << 5) /* COPY_SUM: XXH3-64 per 64 KiB piece */
#define REFDEV_CAPS_COPY_LIST (1u << 6) /* COPY_LIST: a gather/scatter list (1.4) */
#define REFDEV_REG_NUM_ENGINES 0x000c
#define REFDEV_REG_VRAM_SIZE 0x0010
#define REFDEV_REG_FABRIC_ID 0x0018
#define REFDEV_REG_FABRIC_PEERS 0x001c
#define REFDEV_REG_FABRIC_FAST 0x0020
#define REFDEV_REG_FABRIC_UID 0x0028 /* 64-bit; 0 when alone */
#define REFDEV_REG_SCRATCH 0x0040

/* MSI-X vectors */
#define REFDEV_VEC_ENGINE(n) (n)
#define REFDEV_VEC_ERROR 2
#define REFDEV_VEC_FAULT 3
#define REFDEV_VEC_EXEC 4
#define REFDEV_NUM_VECTORS 5

/* Platform power block in config space (vendor capability). */
#define REFDEV_PWR_CTL 0x04 /* from the vendor capability */
#define REFDEV_PWR_MAIN_OFF (1u << 0)
#define REFDEV_PWR_STATE 0x08
#define REFDEV_PWR_WAKE_LAT_US 0x0c

#endif
