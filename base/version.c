/* SPDX-License-Identifier: MIT */
#include <ugpu/ugpu.h>

UGPU_API unsigned int ugpu_version(void)
{
	return UGPU_VERSION_NUMBER;
}

UGPU_API const char *ugpu_version_string(void)
{
	return UGPU_VERSION_STRING;
}
