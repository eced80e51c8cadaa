/* SPDX-License-Identifier: MIT
 * test_scrub.c — masking the password in error messages ends on every
 * input: every message and every password over {'*', 'a', 'b'} up to a few
 * characters (passwords made of the mask itself among them), in each
 * field that is scrubbed. No server needed; a hang fails by the alarm.
 */
#include "harness.h"
#include "error.h"

#include <stdlib.h>
#include <unistd.h>

static const char alphabet[] = "*ab";

/* The n-th string over the alphabet of length len, in out. */
static void nth(char *out, size_t len, size_t n)
{
    for (size_t i = 0; i < len; i++) {
        out[i] = alphabet[n % 3];
        n /= 3;
    }
    out[len] = '\0';
}

static size_t power3(size_t k)
{
    size_t p = 1;
    while (k--)
        p *= 3;
    return p;
}

static void test_every_short_input_ends(void)
{
    char secret[8], message[16];
    long checked = 0, left = 0;
    for (size_t sl = 1; sl <= 5; sl++)
        for (size_t si = 0; si < power3(sl); si++) {
            nth(secret, sl, si);
            int starry = strchr(secret, 'a') == NULL && strchr(secret, 'b') == NULL;
            for (size_t ml = 0; ml <= 9; ml++)
                for (size_t mi = 0; mi < power3(ml); mi++) {
                    pgs_error_t err;
                    pgs_error_clear(&err);
                    nth(message, ml, mi);
                    snprintf(err.message, sizeof err.message, "%s", message);
                    snprintf(err.detail, sizeof err.detail, "%s", message);
                    snprintf(err.hint, sizeof err.hint, "%s", message);
                    pgs_error_scrub(&err, secret);
                    CHECK(strlen(err.message) <= ml && strlen(err.hint) <= ml);
                    /* The mask is all '*': only a password without one can
                     * never be seen again. */
                    if (!starry && strchr(secret, '*') == NULL && strstr(err.message, secret))
                        left++;
                    checked++;
                }
        }
    CHECK(left == 0);
    CHECK(checked > 1000000);
}

/* Long passwords of asterisks, in a message full of them. */
static void test_asterisk_passwords(void)
{
    char secret[64];
    for (size_t n = 1; n < sizeof secret; n++) {
        memset(secret, '*', n);
        secret[n] = '\0';
        pgs_error_t err;
        pgs_error_clear(&err);
        memset(err.message, '*', sizeof err.message - 1);
        pgs_error_scrub(&err, secret);
        CHECK(strlen(err.message) <= sizeof err.message - 1);
        snprintf(err.message, sizeof err.message, "select 1 * * 2: %s!", secret);
        pgs_error_scrub(&err, secret);
        CHECK(strncmp(err.message, "select 1 * * 2: ", 16) == 0);
        CHECK(err.message[strlen(err.message) - 1] == '!');
    }
}

/* A field already cut to its size, ending in the start of the password
 * (…aaaTopSecretX cut after "Top"): that start is masked too. */
static void test_secret_at_the_cut(void)
{
    const char *secret = "TopSecretX";
    for (size_t k = 1; k < strlen(secret); k++) {
        pgs_error_t err;
        pgs_error_clear(&err);
        size_t room = sizeof err.message - 1;
        memset(err.message, 'a', room - k);
        memcpy(err.message + room - k, secret, k);
        err.message[room] = '\0';
        pgs_error_scrub(&err, secret);
        CHECK(strlen(err.message) == room);
        CHECK(err.message[room - k] == '*' && err.message[room - 1] == '*');
        CHECK(err.message[room - k - 1] == 'a');
    }
    /* A field that was not cut keeps a tail that merely looks like it. */
    pgs_error_t err;
    pgs_error_clear(&err);
    snprintf(err.message, sizeof err.message, "value Top");
    pgs_error_scrub(&err, secret);
    CHECK(strcmp(err.message, "value Top") == 0);
}

/* Whitespace inside the password: masked as it is written. */
static void test_blank_passwords(void)
{
    const char *secrets[] = {"Top  Secret", "Tab\tSecret", "Trail Secret\n"};
    for (size_t i = 0; i < 3; i++) {
        pgs_error_t err;
        pgs_error_clear(&err);
        snprintf(err.hint, sizeof err.hint, "say \"%s\" twice: %s", secrets[i], secrets[i]);
        pgs_error_scrub(&err, secrets[i]);
        CHECK(strstr(err.hint, "Secret") == NULL);
    }
}

int main(void)
{
    alarm(60);
    static const pgs_test_t tests[] = {{"every short input ends", test_every_short_input_ends},
                                       {"passwords of asterisks", test_asterisk_passwords},
                                       {"a password at the cut", test_secret_at_the_cut},
                                       {"passwords with blanks", test_blank_passwords},
                                       {NULL, NULL}};
    return pgs_test_run(tests);
}
