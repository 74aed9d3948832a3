/* An outside program: it sees only the installed public headers. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <ugpu/ugpu.h>

int main(void)
{
	struct ugpu_context_opts opts = { .size = sizeof(opts), .log_level = UGPU_LOG_ERROR };
	struct ugpu_context *ctx = NULL;
	int ret;

	if (ugpu_version() != UGPU_VERSION_NUMBER) {
		fprintf(stderr, "consumer: header %s, library %s\n", UGPU_VERSION_STRING,
			ugpu_version_string());
		return 1;
	}
	ret = ugpu_context_create(&opts, &ctx);
	if (ret) {
		fprintf(stderr, "consumer: ugpu_context_create: %s\n", ugpu_strerror(ret));
		return 1;
	}
	if (strcmp(ugpu_strerror(-ENODEV), "device is gone (removed or not answering)") != 0) {
		fprintf(stderr, "consumer: unexpected strerror text\n");
		return 1;
	}
	ugpu_context_destroy(ctx);
	printf("consumer: ugpu %s ok\n", ugpu_version_string());
	return 0;
}
