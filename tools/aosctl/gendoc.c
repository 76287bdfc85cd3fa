/* aosctl's man page and bash completion, written from the same command table as --help and
 * --desc (so they cannot drift): `aosctl --gen-man` and `aosctl --gen-bash-completion`,
 * run by the build. */
#include "gendoc.h"

#include <stdio.h>
#include <string.h>

#include "aos/aos.h"

/* roff: a backslash is \e, a line may not start with . or ' */
static void roff(FILE *f, const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", f);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", f);
        else if (*s == '-')
            fputs("\\-", f);
        else
            fputc(*s, f);
    }
}

static void arg_lines(FILE *f, const ctl_arg *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fputs(".TP\n\\fB", f);
        roff(f, a[i].name);
        fputs("\\fR", f);
        if (a[i].short_name)
            fprintf(f, ", \\fB\\-%c\\fR", a[i].short_name);
        if (a[i].name[0] == '-' && a[i].type != CTL_BOOL) {
            fputs(" \\fI", f);
            roff(f, a[i].value ? a[i].value : "VALUE");
            fputs("\\fR", f);
        }
        fputc('\n', f);
        roff(f, a[i].summary ? a[i].summary : "");
        if (a[i].def) {
            fputs(" (default ", f);
            roff(f, a[i].def);
            fputc(')', f);
        }
        if (a[i].name[0] != '-' && !a[i].required)
            fputs(" (optional)", f);
        fputc('\n', f);
    }
}

int ctl_gen_man(FILE *f, const ctl_cmd *globals, const ctl_group *const *groups, size_t ng)
{
    fprintf(f, ".TH AOSCTL 1 \"\" \"aos %s\" \"aos manual\"\n", AOS_VERSION);
    fputs(".SH NAME\naosctl \\- the admin control tool of aos, an operating system for LLM "
          "agents\n.SH SYNOPSIS\n\\fBaosctl\\fR [\\fIglobal flags\\fR] \\fICOMMAND\\fR "
          "[\\fIARGUMENTS\\fR] [\\fIFLAGS\\fR]\n.SH DESCRIPTION\naosctl talks to aosd over its "
          "control socket in the data directory. Every command takes \\fB\\-\\-json\\fR "
          "(exactly one JSON document on standard output, errors included) and "
          "\\fB\\-\\-desc\\fR (its arguments, output schema and exit codes as JSON). Flags go "
          "anywhere after the command, as \\fB\\-\\-flag VALUE\\fR or "
          "\\fB\\-\\-flag=VALUE\\fR.\n.SH GLOBAL FLAGS\n", f);
    arg_lines(f, globals->args, globals->nargs);
    fputs(".SH COMMANDS\n", f);
    for (size_t g = 0; g < ng; g++)
        for (size_t i = 0; i < groups[g]->n; i++) {
            const ctl_cmd *c = &groups[g]->cmds[i];
            char u[512];
            ctl_usage(c->args, c->nargs, u, sizeof u);
            fputs(".SS \"", f);
            roff(f, c->path);
            if (u[0]) {
                fputc(' ', f);
                roff(f, u);
            }
            fputs("\"\n", f);
            roff(f, c->summary ? c->summary : "");
            fputc('\n', f);
            arg_lines(f, c->args, c->nargs);
        }
    fputs(".SH EXIT STATUS\n0 on success; 2 for a usage error; other codes name the error "
          "class (aosctl \\fICOMMAND\\fR \\-\\-desc lists them).\n"
          ".SH FILES\n.TP\n/var/lib/aos\nthe data directory of a system-wide aosd "
          "(\\fB$AOS_DATA_DIR\\fR or \\fB\\-\\-data\\-dir\\fR choose another).\n"
          ".SH SEE ALSO\n\\fBaosd\\fR(8), \\fBjournalctl\\fR(1)\n", f);
    return ferror(f) ? 1 : 0;
}

/* Words for compgen: the flags of cmd (and the global ones). */
static void flags_of(FILE *f, const ctl_arg *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].name[0] == '-') {
            fprintf(f, " %s", a[i].name);
            if (a[i].short_name)
                fprintf(f, " -%c", a[i].short_name);
        }
}

int ctl_gen_bash(FILE *f, const ctl_cmd *globals, const ctl_group *const *groups, size_t ng)
{
    fputs("# bash completion for aosctl, generated from its command table (aosctl "
          "--gen-bash-completion)\n_aosctl() {\n"
          "    local cur=${COMP_WORDS[COMP_CWORD]} words=() w i\n"
          "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
          "        w=${COMP_WORDS[i]}\n"
          "        case $w in --data-dir|--timeout) ((i++)) ;; -*) ;; *) words+=(\"$w\") ;; "
          "esac\n    done\n    local typed=\"${words[*]}\" cands=\n"
          "    case \"$typed\" in\n", f);
    /* a command's own flags once its words are typed; else the next word of the paths */
    for (size_t g = 0; g < ng; g++)
        for (size_t i = 0; i < groups[g]->n; i++) {
            const ctl_cmd *c = &groups[g]->cmds[i];
            fprintf(f, "        \"%s\"|\"%s \"*) cands=\"", c->path, c->path);
            flags_of(f, c->args, c->nargs);
            flags_of(f, globals->args, globals->nargs);
            fputs("\" ;;\n", f);
        }
    fputs("        *) cands=$(printf '%s\\n' \\\n", f);
    for (size_t g = 0; g < ng; g++)
        for (size_t i = 0; i < groups[g]->n; i++)
            fprintf(f, "            '%s' \\\n", groups[g]->cmds[i].path);
    fputs("            | while read -r p; do\n"
          "                if [ -z \"$typed\" ]; then echo \"${p%% *}\";\n"
          "                elif [ \"${p#\"$typed \"}\" != \"$p\" ]; then r=${p#\"$typed \"}; "
          "echo \"${r%% *}\"; fi\n"
          "            done | sort -u) ;;\n    esac\n"
          "    case $cur in -*) cands=\"$cands", f);
    flags_of(f, globals->args, globals->nargs);
    fputs("\" ;; esac\n"
          "    COMPREPLY=($(compgen -W \"$(printf '%s\\n' $cands | sort -u)\" -- \"$cur\"))\n}\n"
          "complete -F _aosctl aosctl\n", f);
    return ferror(f) ? 1 : 0;
}
