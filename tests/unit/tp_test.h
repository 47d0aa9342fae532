/*
 * tp_test.h - the smallest test harness that does the job: CHECK records a
 * failure with file and line and goes on; TP_TEST_MAIN runs the listed
 * tests and prints "N passed, N failed". Exit status is non-zero on any
 * failure. No framework to install, nothing to mock.
 */
#ifndef TP_TEST_H
#define TP_TEST_H

#include <stdio.h>
#include <string.h>

static int tp_test_failures;
static int tp_test_checks;

#define CHECK(cond)                                                            \
	do {                                                                   \
		tp_test_checks++;                                              \
		if (!(cond)) {                                                 \
			tp_test_failures++;                                    \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
		}                                                              \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                     \
	do {                                                                   \
		long long tp_a_ = (long long)(a), tp_b_ = (long long)(b);      \
		tp_test_checks++;                                              \
		if (tp_a_ != tp_b_) {                                          \
			tp_test_failures++;                                    \
			fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", \
				__FILE__, __LINE__, #a, #b, tp_a_, tp_b_);     \
		}                                                              \
	} while (0)

#define CHECK_EQ_STR(a, b)                                                     \
	do {                                                                   \
		const char *tp_a_ = (a), *tp_b_ = (b);                         \
		tp_test_checks++;                                              \
		if (!tp_a_ || !tp_b_ || strcmp(tp_a_, tp_b_) != 0) {           \
			tp_test_failures++;                                    \
			fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", \
				__FILE__, __LINE__, #a, #b,                    \
				tp_a_ ? tp_a_ : "(null)",                      \
				tp_b_ ? tp_b_ : "(null)");                     \
		}                                                              \
	} while (0)

typedef struct {
	const char *name;
	void (*fn)(void);
} tp_test_case_t;

#define TP_TEST(fn) {#fn, fn}

#define TP_TEST_MAIN(...)                                                      \
	int main(void)                                                         \
	{                                                                      \
		static const tp_test_case_t cases[] = {__VA_ARGS__};          \
		int passed = 0, failed = 0;                                    \
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) { \
			int before = tp_test_failures;                         \
			cases[i].fn();                                         \
			if (tp_test_failures == before) {                      \
				passed++;                                      \
			} else {                                               \
				failed++;                                      \
				fprintf(stderr, "FAIL %s\n", cases[i].name);   \
			}                                                      \
		}                                                              \
		printf("%d passed, %d failed\n", passed, failed);              \
		return failed ? 1 : 0;                                         \
	}

#endif
